"""LoRA fine-tuning recipes: named presets whose every field can be overridden.

Presets:

* ``betley`` — the settings of the emergent-misalignment fine-tunes of Betley
  et al. (2025): LoRA rank 32, learning rate 2e-4 with linear decay and no
  warmup, batch 4, one epoch, sequences up to 4096 tokens, no weight decay.
* ``organisms`` — the model-organism fine-tunes: learning rate 1e-5, effective
  batch 16, 5 warmup steps, weight decay 0.01, sequences up to 2048 tokens.

Fields a preset's description does not name (LoRA alpha and dropout, target
modules, optimizer, checkpoint frequency...) keep this toolkit's defaults,
listed on :class:`Recipe`. The full recipe is written to every training
manifest, so a run can be repeated exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from persona_collapse.core.errors import ConfigError, UnknownNameError, format_validation_error
from persona_collapse.core.yamlio import load_yaml_mapping

LrScheduler = Literal[
    "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"
]


class Recipe(BaseModel):
    """Hyper-parameters of one LoRA fine-tune (all overridable)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True
    )

    name: str = "custom"
    """Preset the recipe starts from (``custom`` for none)."""

    lora_rank: int = Field(default=32, ge=1)
    """LoRA rank r."""

    lora_alpha: float = Field(default=64.0, gt=0)
    """LoRA scaling alpha (the update is scaled by alpha / r)."""

    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""

    target_modules: str | list[str] = "all-linear"
    """Modules that get adapters: ``all-linear`` or a list of module names."""

    use_rslora: bool = False
    """Rank-stabilised LoRA (scale alpha / sqrt(r))."""

    learning_rate: float = Field(default=2e-4, gt=0.0)
    """Peak learning rate."""

    lr_scheduler: LrScheduler = "linear"
    """Learning-rate schedule after warmup (``linear`` decays to 0 at the last step)."""

    warmup_steps: int = Field(default=0, ge=0)
    """Optimizer steps of linear warmup."""

    batch_size: int = Field(default=4, ge=1)
    """Effective batch size: examples per optimizer step."""

    micro_batch_size: int | None = Field(default=None, ge=1)
    """Examples per forward pass; ``batch_size`` must be a multiple (None: ``batch_size``)."""

    epochs: float = Field(default=1.0, gt=0.0)
    """Passes over the dataset."""

    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (overrides ``epochs``); None: use ``epochs``."""

    max_length: int = Field(default=4096, ge=8)
    """Longest tokenised example; longer ones are truncated at the end."""

    weight_decay: float = Field(default=0.0, ge=0.0)
    """AdamW weight decay."""

    optimizer: str = "adamw_torch"
    """Optimizer name as ``transformers`` knows it."""

    max_grad_norm: float = Field(default=1.0, gt=0.0)
    """Gradient-norm clipping threshold."""

    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, slower)."""

    save_steps: int = Field(default=100, ge=1)
    """Write a resumable checkpoint every this many optimizer steps."""

    save_total_limit: int | None = Field(default=2, ge=1)
    """Keep at most this many checkpoints (None: all)."""

    logging_steps: int = Field(default=1, ge=1)
    """Record the training loss every this many optimizer steps."""

    @model_validator(mode="after")
    def _micro_batches_divide(self) -> Recipe:
        if self.batch_size % self.micro_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size}"
            )
        return self

    @property
    def micro_size(self) -> int:
        """Examples per forward pass."""
        return self.micro_batch_size or self.batch_size

    @property
    def gradient_accumulation_steps(self) -> int:
        """Forward passes per optimizer step (``batch_size / micro_batch_size``)."""
        return self.batch_size // self.micro_size


RECIPES: Mapping[str, Recipe] = MappingProxyType(
    {
        "betley": Recipe(
            name="betley",
            lora_rank=32,
            learning_rate=2e-4,
            lr_scheduler="linear",
            warmup_steps=0,
            batch_size=4,
            epochs=1.0,
            max_length=4096,
            weight_decay=0.0,
        ),
        "organisms": Recipe(
            name="organisms",
            learning_rate=1e-5,
            lr_scheduler="linear",
            warmup_steps=5,
            batch_size=16,
            micro_batch_size=4,
            epochs=1.0,
            max_length=2048,
            weight_decay=0.01,
        ),
    }
)
"""The named presets (see the module docstring)."""


def get_recipe(
    name_or_path: str | os.PathLike[str] = "betley", overrides: Mapping[str, Any] | None = None
) -> Recipe:
    """A preset (or a recipe YAML file) with ``overrides`` applied.

    A YAML file is a mapping of recipe fields; its optional ``preset`` key names
    the preset it starts from (default: the toolkit defaults).

    Args:
        name_or_path: Preset name (``betley``, ``organisms``) or path to a YAML file.
        overrides: Field values replacing the preset's.

    Raises:
        UnknownNameError: Unknown preset.
        ConfigError: An unknown field or an invalid value (names the field).
        InputFileError: An unreadable or malformed YAML file.
    """
    text = os.fspath(name_or_path)
    source = f"recipe {text!r}"
    if text in RECIPES:
        base: dict[str, Any] = RECIPES[text].model_dump()
    elif text.endswith((".yaml", ".yml")) or Path(text).is_file():
        data = load_yaml_mapping(Path(text), what="recipe")
        preset = data.pop("preset", None)
        if preset is not None and preset not in RECIPES:
            raise UnknownNameError("recipe preset", str(preset), RECIPES)
        base = RECIPES[preset].model_dump() if preset else Recipe().model_dump()
        base.update(data)
        if "name" not in data:
            base["name"] = str(preset) if preset else Path(text).stem
    else:
        raise UnknownNameError("recipe", text, RECIPES)
    values = {**base, **dict(overrides or {})}
    try:
        return Recipe.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values are read as JSON when they parse, else text.

    Raises:
        ConfigError: A pair without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"recipe override must be KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


__all__ = ["RECIPES", "LrScheduler", "Recipe", "get_recipe", "parse_overrides"]
