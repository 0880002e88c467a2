"""Producing a study's fine-tuned variants: LoRA adapters trained here, or OpenAI jobs.

Each variant with a ``finetune`` block gets a folder
``<output>/finetune/<family>/<variant>/``:

* ``platform: local``: the output of :func:`~persona_collapse.variants.finetune.lora.train_lora`
  (``checkpoints/``, ``adapter/`` with its manifest, ``manifest.json``,
  ``training.json``). A finished adapter whose manifest records the same base
  model, dataset checksum, recipe and seed is reused without training; an
  unfinished one resumes from its last checkpoint; a finished one trained with
  other settings is refused (delete the folder to train again).
* ``platform: openai``: ``openai/`` holds the job's state
  (:func:`~persona_collapse.variants.finetune.openai_jobs.run_openai_finetune` resumes from it).

``produced.json`` records what the variant is measured with (model, adapter,
settings fingerprint); it is written when production succeeds, and a later
session with the same settings reuses it without any call.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from persona_collapse.core.errors import ConfigError, UserError
from persona_collapse.report.tables import write_text_atomic
from persona_collapse.study.loading import OPENAI_JOBS_MODULE, LoadedStudy, recipe_getter
from persona_collapse.study.spec import FinetuneSpec, StudyConfig
from persona_collapse.variants.finetune.datasets import (
    ChatDataset,
    read_chat_jsonl,
    resolve_dataset,
)
from persona_collapse.variants.finetune.recipes import Recipe

logger = logging.getLogger(__name__)

PRODUCED_NAME = "produced.json"
"""File of a variant's fine-tuning folder recording what the variant is measured with."""

OPENAI_STATE = "openai"
"""Sub-folder of the fine-tuning folder holding an OpenAI job's state."""

Trainer = Callable[..., Any]
"""Signature of :func:`~persona_collapse.variants.finetune.lora.train_lora` (injectable)."""

OpenAIRunner = Callable[..., str]
"""Signature of :func:`~persona_collapse.variants.finetune.openai_jobs.run_openai_finetune`."""


def finetune_folder(config: StudyConfig, family: str, label: str) -> Path:
    """Folder of a fine-tuned variant: ``<output>/finetune/<family>/<variant>``."""
    return config.output_dir / "finetune" / family / label


@dataclass(frozen=True)
class FinetunePlan:
    """One fine-tuned variant with its inputs resolved.

    Attributes:
        family, label: The variant.
        spec: Its ``finetune`` block (defaults filled in).
        base_model: Model fine-tuned.
        dataset: The training data, read and validated.
        recipe: The recipe with the overrides applied: a LoRA
            :class:`~persona_collapse.variants.finetune.recipes.Recipe` (local) or the job's
            ``OpenAIJobRecipe`` (openai).
        folder: Its fine-tuning folder.
        api: OpenAI only: ``base_url`` and ``api_key_env`` of the job.
    """

    family: str
    label: str
    spec: FinetuneSpec
    base_model: str
    dataset: ChatDataset
    recipe: BaseModel
    folder: Path
    api: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``family/label``."""
        return f"{self.family}/{self.label}"

    @property
    def settings(self) -> dict[str, Any]:
        """What defines the fine-tuned model (JSON-ready)."""
        out: dict[str, Any] = {
            "platform": self.spec.platform,
            "base_model": self.base_model,
            "dataset_sha256": self.dataset.sha256,
            "recipe": json.loads(json.dumps(self.recipe.model_dump())),
            "seed": self.spec.seed,
        }
        if self.spec.platform == "openai":
            out["suffix"] = self.spec.suffix
        return out

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of :attr:`settings`."""
        raw = json.dumps(self.settings, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class ProducedVariant:
    """A fine-tuned variant, ready to measure.

    Attributes:
        family, label: The variant.
        platform: ``local`` or ``openai``.
        model: Local: the base model the adapter goes on; openai: the fine-tuned model id.
        adapter: Local: the adapter folder; None for openai.
        model_label: Label of the variant's runs (part of their identity).
        fingerprint: Fingerprint of the settings it was produced with.
        trained: Whether this session trained it (or ran the job).
        final_loss: Last logged training loss (local), None when unknown.
        steps: Optimizer steps (local), None when unknown.
    """

    family: str
    label: str
    platform: str
    model: str
    adapter: Path | None
    model_label: str
    fingerprint: str
    trained: bool
    final_loss: float | None = None
    steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (``produced.json``)."""
        return {
            "family": self.family,
            "label": self.label,
            "platform": self.platform,
            "model": self.model,
            "adapter": None if self.adapter is None else str(self.adapter),
            "model_label": self.model_label,
            "fingerprint": self.fingerprint,
            "final_loss": self.final_loss,
            "steps": self.steps,
        }


def read_produced(config: StudyConfig, family: str, label: str) -> ProducedVariant | None:
    """The recorded production of a variant, or None when it was not produced yet."""
    path = finetune_folder(config, family, label) / PRODUCED_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ProducedVariant(
            family=family,
            label=label,
            platform=str(data["platform"]),
            model=str(data["model"]),
            adapter=None if data.get("adapter") is None else Path(data["adapter"]),
            model_label=str(data["model_label"]),
            fingerprint=str(data["fingerprint"]),
            trained=False,
            final_loss=data.get("final_loss"),
            steps=data.get("steps"),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable %s (%s)", path, exc)
        return None


def _short_model(base_model: str) -> str:
    """A local folder's name, or the Hub id as it is."""
    p = Path(base_model)
    return p.name if p.is_absolute() or p.exists() else base_model


def local_model_label(plan: FinetunePlan) -> str:
    """Label of a LoRA variant: base model, and a fingerprint of how it was trained."""
    return f"{_short_model(plan.base_model)}+lora:{plan.fingerprint[:12]}"


def _openai_runner() -> OpenAIRunner:
    try:
        # Imported by name: the module is optional in this release's layout.
        module = importlib.import_module(OPENAI_JOBS_MODULE)
    except ImportError as exc:
        if exc.name == OPENAI_JOBS_MODULE:
            raise ConfigError(
                "fine-tuning on platform 'openai' is not available in this installation "
                "(module persona_collapse.variants.finetune.openai_jobs is missing); use "
                "'platform: local' or upgrade persona-collapse"
            ) from None
        raise
    runner: OpenAIRunner = module.run_openai_finetune
    return runner


def openai_api(config: StudyConfig, family: str, label: str) -> dict[str, Any]:
    """``base_url`` and ``api_key_env`` of a variant's OpenAI fine-tuning job.

    Each is the ``finetune`` block's, else the variant backend's (its key, or its
    ``api_key_env`` option, which may be None for a server without authentication),
    else the OpenAI defaults.
    """
    variant = config.families[family].variants[label]
    ft = variant.finetune
    backend = config.backends[variant.backend or ""]
    url = (ft.base_url if ft is not None else None) or backend.base_url
    # An explicit ``api_key_env: null`` (no key at all) counts as set, at either level.
    if ft is not None and (ft.api_key_env is not None or "api_key_env" in ft.model_fields_set):
        key: str | None = ft.api_key_env
    else:
        key = {**backend.options, **backend.connection_options()}.get(
            "api_key_env", "OPENAI_API_KEY"
        )
    return {"base_url": url[0] if isinstance(url, list) else url, "api_key_env": key}


def plan_finetunes(study: LoadedStudy) -> list[FinetunePlan]:
    """Resolve every fine-tuned variant's dataset, recipe and base model (no training).

    Raises:
        ConfigError: A dataset that is missing, not fetched or malformed, or a bad
            recipe (names the key and the fix).
    """
    cfg = study.config
    plans: list[FinetunePlan] = []
    for family, fam in cfg.families.items():
        for label, variant in fam.variants.items():
            ft = variant.finetune
            if ft is None:
                continue
            key = f"families.{family}.{label}.finetune"
            try:
                dataset = read_chat_jsonl(resolve_dataset(ft.dataset))
            except UserError as exc:
                raise ConfigError(
                    f"{study.source}: field '{key}.dataset': {exc}; give a chat JSONL file "
                    f"(relative paths start at {study.root}) or a fetched dataset name"
                ) from None
            get = recipe_getter(ft.platform)
            if get is None:
                _openai_runner()  # raises: the platform is not available
                continue
            try:
                recipe = get(ft.recipe, ft.overrides)
            except UserError as exc:
                raise ConfigError(f"{study.source}: field '{key}.recipe': {exc}") from None
            api = openai_api(cfg, family, label) if ft.platform == "openai" else {}
            plans.append(
                FinetunePlan(
                    family=family,
                    label=label,
                    spec=ft,
                    base_model=ft.base_model or "",
                    dataset=dataset,
                    recipe=recipe,
                    folder=finetune_folder(cfg, family, label),
                    api=api,
                )
            )
    if any(p.spec.platform == "openai" for p in plans):
        _openai_runner()  # fail now, before anything is trained, if it is unavailable
    return plans


def _manifest_settings(manifest: Mapping[str, Any]) -> dict[str, Any]:
    dataset = manifest.get("dataset") or {}
    return {
        "platform": "local",
        "base_model": manifest.get("base_model"),
        "dataset_sha256": dataset.get("sha256") if isinstance(dataset, Mapping) else None,
        "recipe": manifest.get("recipe"),
        "seed": manifest.get("seed"),
    }


def _produce_local(
    study: LoadedStudy, plan: FinetunePlan, trainer: Trainer | None, progress: bool
) -> ProducedVariant:
    from persona_collapse.variants.finetune.lora import MANIFEST_NAME, read_manifest

    adapter = plan.folder / "adapter"
    key = f"families.{plan.family}.{plan.label}.finetune"
    if (adapter / MANIFEST_NAME).is_file():
        manifest = read_manifest(adapter)
        found = _manifest_settings(manifest)
        if found != plan.settings:
            changed = sorted(k for k in found if found[k] != plan.settings.get(k))
            raise ConfigError(
                f"{study.source}: field {key!r}: {plan.folder} holds an adapter trained with "
                f"other settings ({', '.join(changed)}); delete that folder (and the "
                "variant's runs) to train again, or restore the settings"
            )
        logger.info("%s: reusing the adapter in %s", plan.key, adapter)
        return ProducedVariant(
            plan.family,
            plan.label,
            "local",
            plan.base_model,
            adapter,
            local_model_label(plan),
            plan.fingerprint,
            trained=False,
            final_loss=manifest.get("final_loss"),
            steps=manifest.get("steps"),
        )
    if trainer is None:
        from persona_collapse.variants.finetune.lora import train_lora

        trainer = train_lora
    logger.info("%s: training a LoRA adapter on %s", plan.key, plan.base_model)
    try:
        result = trainer(
            plan.base_model,
            plan.dataset,
            plan.folder,
            recipe=plan.recipe if isinstance(plan.recipe, Recipe) else plan.spec.recipe,
            overrides=None if isinstance(plan.recipe, Recipe) else plan.spec.overrides,
            seed=plan.spec.seed,
            resume=True,
            device=plan.spec.device,
            dtype=plan.spec.dtype,
            progress=progress,
        )
    except ConfigError as exc:
        raise ConfigError(f"{study.source}: field {key!r}: {exc}") from None
    return ProducedVariant(
        plan.family,
        plan.label,
        "local",
        plan.base_model,
        Path(result.adapter_dir),
        local_model_label(plan),
        plan.fingerprint,
        trained=True,
        final_loss=float(result.final_loss),
        steps=int(result.steps),
    )


def _produce_openai(
    study: LoadedStudy, plan: FinetunePlan, runner: OpenAIRunner | None
) -> ProducedVariant:
    recorded = read_produced(study.config, plan.family, plan.label)
    if recorded is not None and recorded.fingerprint == plan.fingerprint:
        logger.info("%s: reusing the fine-tuned model %s", plan.key, recorded.model)
        return recorded
    key = f"families.{plan.family}.{plan.label}.finetune"
    if recorded is not None:
        raise ConfigError(
            f"{study.source}: field {key!r}: {plan.folder} holds a fine-tuned model made "
            "with other settings; delete that folder (and the variant's runs) to fine-tune "
            "again, or restore the settings"
        )
    run = runner or _openai_runner()
    logger.info("%s: fine-tuning %s through the OpenAI API", plan.key, plan.base_model)
    model_id = run(
        plan.dataset.path,
        base_model=plan.base_model,
        state_dir=plan.folder / OPENAI_STATE,
        recipe=plan.spec.recipe,
        overrides=dict(plan.spec.overrides),
        suffix=plan.spec.suffix,
        seed=plan.spec.seed,
        base_url=plan.api.get("base_url"),
        api_key_env=plan.api.get("api_key_env"),
    )
    return ProducedVariant(
        plan.family,
        plan.label,
        "openai",
        str(model_id),
        None,
        str(model_id),
        plan.fingerprint,
        trained=True,
    )


def produce_variants(
    study: LoadedStudy,
    plans: list[FinetunePlan],
    *,
    progress: bool = False,
    trainer: Trainer | None = None,
    openai_runner: OpenAIRunner | None = None,
) -> dict[str, ProducedVariant]:
    """Fine-tune (or reuse) every planned variant; resumable.

    Args:
        study: The loaded study.
        plans: From :func:`plan_finetunes`.
        progress: Show the trainer's progress bar.
        trainer: Replaces :func:`~persona_collapse.variants.finetune.lora.train_lora` (tests).
        openai_runner: Replaces ``run_openai_finetune`` (tests).

    Returns:
        ``family/label`` -> the produced variant.

    Raises:
        ConfigError: A folder holding a model made with other settings, or bad
            training settings.
    """
    out: dict[str, ProducedVariant] = {}
    for plan in plans:
        if plan.spec.platform == "local":
            produced = _produce_local(study, plan, trainer, progress)
        else:
            produced = _produce_openai(study, plan, openai_runner)
        record = json.dumps(produced.to_dict(), indent=2, ensure_ascii=False) + "\n"
        path = plan.folder / PRODUCED_NAME
        if not path.is_file() or path.read_text(encoding="utf-8") != record:
            write_text_atomic(path, record)
        out[plan.key] = produced
    return out


__all__ = [
    "OPENAI_STATE",
    "PRODUCED_NAME",
    "FinetunePlan",
    "OpenAIRunner",
    "ProducedVariant",
    "Trainer",
    "finetune_folder",
    "local_model_label",
    "openai_api",
    "plan_finetunes",
    "produce_variants",
    "read_produced",
]
