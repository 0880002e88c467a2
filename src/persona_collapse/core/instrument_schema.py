"""The YAML schema of custom instruments (pydantic models).

Kept apart from :mod:`persona_collapse.core.instrument` so that using the
built-in instruments does not import pydantic or build these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from persona_collapse.core.errors import ConfigError, format_validation_error

# The same values as persona_collapse.core.instrument's CATCH and ItemKind (a test checks):
# that module imports this one only when a YAML instrument is loaded.
CATCH = "Catch"
ItemKind = Literal["relevance", "agreement"]


class ScaleModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int = Field(description="Lowest rating on the scale.")
    max: int = Field(description="Highest rating on the scale.")

    @model_validator(mode="after")
    def _ordered(self) -> ScaleModel:
        if self.max <= self.min:
            raise ValueError("scale.max must be greater than scale.min")
        if self.min < 0 or self.max > 9:
            raise ValueError("scale must lie within 0..9 (single-digit ratings)")
        return self


class BlockModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instruction: str = Field(
        min_length=1, description="Instruction shown before items of this kind."
    )
    anchors: dict[int, str] = Field(description="Label of each scale value.")


class ItemModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=1, description="Item id, unique, 1-based.")
    text: str = Field(min_length=1, description="Item wording.")
    foundation: str = Field(min_length=1, description="Foundation (or 'Catch').")
    kind: ItemKind = Field(description="'relevance' or 'agreement'.")
    reverse: bool = Field(default=False, description="Reverse-keyed item (profiles reflect it).")

    @field_validator("text", "foundation")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()


class InstrumentModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="Instrument name.")
    scale: ScaleModel
    include_catch: bool = False
    group_noun: str = Field(
        default="foundation", min_length=1, description="What the item groups are called."
    )
    blocks: dict[ItemKind, BlockModel]
    items: list[ItemModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> InstrumentModel:
        ids = [i.id for i in self.items]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate item ids: {dup}")
        scale = set(range(self.scale.min, self.scale.max + 1))
        for kind, block in self.blocks.items():
            if set(block.anchors) != scale:
                raise ValueError(
                    f"blocks.{kind}.anchors must label exactly the scale values "
                    f"{sorted(scale)}, got {sorted(block.anchors)}"
                )
        for item in self.items:
            if item.kind not in self.blocks:
                raise ValueError(f"item {item.id} has kind {item.kind!r} but no such block")
        if not any(i.foundation != CATCH for i in self.items):
            raise ValueError("at least one item must belong to a foundation other than 'Catch'")
        return self


def validate_instrument(data: Any, *, source: str = "<dict>") -> InstrumentModel:
    """Validate plain data against the instrument schema.

    Raises:
        ConfigError: naming the source and the offending field.
    """
    try:
        return InstrumentModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid instrument, {format_validation_error(exc)}") from None
