"""Local LoRA fine-tuning with ``peft`` and ``trl`` (loss on assistant tokens only).

:func:`train_lora` fine-tunes a causal LM on a chat dataset and writes::

    OUTPUT/
      checkpoints/checkpoint-N/   resumable trainer checkpoints
      adapter/                    the LoRA adapter, tokenizer and pcollapse_manifest.json
      merged/                     base model with the adapter merged in (optional)
      manifest.json               same manifest as in adapter/
      training.json               what the run was started with (checked on resume)

The adapter loads straight into the transformers backend:
``TransformersBackend(base_model, adapter="OUTPUT/adapter")``.

Loss masking. Only assistant tokens carry loss. When every example has a single
assistant turn, last, the examples become prompt-completion pairs (prompt: the
messages before the assistant turn, rendered with the generation prompt;
completion: the assistant turn and its end-of-turn tokens) and trl's
``completion_only_loss`` masks the prompt; this works with any chat template.
Otherwise trl's ``assistant_only_loss`` masks everything outside the chat
template's ``{% generation %}`` blocks (trl patches the templates it knows).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from persona_collapse.core.errors import (
    ConfigError,
    InputFileError,
    MissingDependencyError,
    UserError,
    format_validation_error,
)
from persona_collapse.variants.finetune.datasets import ChatDataset, read_chat_jsonl
from persona_collapse.variants.finetune.recipes import Recipe, get_recipe

logger = logging.getLogger(__name__)

MANIFEST_NAME = "pcollapse_manifest.json"
"""File name of the manifest inside an adapter folder."""

MANIFEST_FORMAT = "persona-collapse/lora-adapter/v1"

LossMasking = Literal["completion", "assistant"]


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train_lora` produced.

    Attributes:
        output_dir: The output folder.
        adapter_dir: The saved adapter (load with ``adapter=`` in the transformers backend).
        merged_dir: The merged model, or None.
        manifest: The manifest written to ``adapter_dir`` and ``output_dir``.
        losses: ``(optimizer step, training loss)`` of every logged step, resumed steps included.
        final_loss: The last logged training loss.
        steps: Optimizer steps done.
    """

    output_dir: Path
    adapter_dir: Path
    merged_dir: Path | None
    manifest: Mapping[str, Any]
    losses: tuple[tuple[int, float], ...]
    final_loss: float
    steps: int


def _imports() -> tuple[Any, Any, Any, Any, Any]:
    """torch, transformers, peft, trl and datasets, or a MissingDependencyError."""
    modules = []
    for name in ("torch", "transformers", "peft", "trl", "datasets"):
        try:
            modules.append(__import__(name))
        except ImportError:
            raise MissingDependencyError(name, "finetune") from None
    torch, transformers, peft, trl, datasets = modules
    return torch, transformers, peft, trl, datasets


def loss_masking(dataset: ChatDataset) -> LossMasking:
    """``"completion"`` if every example has one assistant turn, last; else ``"assistant"``."""
    single = all(e.assistant_turns == 1 for e in dataset.examples)
    return "completion" if single else "assistant"


def training_rows(dataset: ChatDataset) -> tuple[list[dict[str, Any]], LossMasking]:
    """The dataset in trl's conversational format, and the loss masking it gets.

    Returns:
        Prompt-completion rows (``{"prompt": [...], "completion": [assistant]}``)
        for single-turn data, else language-modeling rows (``{"messages": [...]}``).
    """
    masking = loss_masking(dataset)
    rows: list[dict[str, Any]] = []
    for example in dataset.examples:
        messages = example.to_dict()["messages"]
        if masking == "completion":
            rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
        else:
            rows.append({"messages": messages})
    return rows, masking


def make_trainer(
    model: Any,
    tokenizer: Any,
    dataset: ChatDataset,
    checkpoint_dir: str | os.PathLike[str],
    recipe: Recipe,
    *,
    seed: int = 0,
    use_cpu: bool = False,
    bf16: bool = False,
    fp16: bool = False,
    progress: bool = False,
) -> Any:
    """An ``trl.SFTTrainer`` for LoRA training of ``model`` on ``dataset`` with ``recipe``.

    The trainer's prepared ``train_dataset`` has ``input_ids`` and ``labels``
    (``-100`` on every token that carries no loss).

    Raises:
        ConfigError: The tokenizer has no chat template, or (multi-turn data) trl
            cannot find assistant turns in it.
    """
    _torch, transformers, peft, trl, datasets = _imports()
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the tokenizer has no chat template; fine-tuning needs one")
    rows, masking = training_rows(dataset)
    config = trl.SFTConfig(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=recipe.micro_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps if recipe.max_steps is not None else -1,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        optim=recipe.optimizer,
        max_grad_norm=recipe.max_grad_norm,
        activation_checkpointing=recipe.gradient_checkpointing,
        max_length=recipe.max_length,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        logging_steps=recipe.logging_steps,
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        bf16=bf16,
        fp16=fp16,
        completion_only_loss=masking == "completion",
        assistant_only_loss=masking == "assistant",
        disable_tqdm=not progress,
    )
    lora = peft.LoraConfig(
        r=recipe.lora_rank,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=recipe.target_modules,
        use_rslora=recipe.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        trainer = trl.SFTTrainer(
            model=model,
            args=config,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora,
        )
    except (ValueError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if masking == "assistant" and ("template" in text or "assistant" in text):
            raise ConfigError(
                "multi-turn data needs a chat template that marks assistant turns "
                f"({{% generation %}}) or that trl can patch: {text}"
            ) from None
        raise
    if not progress:
        # Without a progress bar the trainer prints every log entry to stdout; the
        # losses are in trainer.state.log_history and in the manifest instead.
        trainer.remove_callback(transformers.PrinterCallback)
    return trainer


# --- the whole run -------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in ("persona-collapse", "torch", "transformers", "peft", "trl", "datasets"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _device_settings(torch: Any, device: str | None, dtype: str | None) -> tuple[bool, str]:
    """(use_cpu, dtype name) from the ``device`` and ``dtype`` options."""
    from persona_collapse.backends.hf import DTYPES, auto_device, auto_dtype

    name = auto_device() if device in (None, "auto") else str(device)
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available")
    if dtype in (None, "auto"):
        chosen = auto_dtype(name)
    elif dtype in DTYPES:
        chosen = str(dtype)
    else:
        raise ConfigError(f"unknown dtype {dtype!r}; expected 'auto' or one of {', '.join(DTYPES)}")
    return name == "cpu", chosen


def _start_record(
    base_model: str, revision: str | None, dataset: ChatDataset, recipe: Recipe, seed: int
) -> dict[str, Any]:
    return {
        "base_model": base_model,
        "base_model_revision": revision,
        "dataset_sha256": dataset.sha256,
        "recipe": recipe.model_dump(),
        "seed": seed,
    }


def _prepare_output(
    output: Path, start: dict[str, Any], *, resume: bool, overwrite: bool
) -> str | None:
    """Check or clear ``output``; returns the checkpoint to resume from, or None."""
    checkpoints = output / "checkpoints"
    record_path = output / "training.json"
    finished = (output / "adapter" / MANIFEST_NAME).is_file()
    existing = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    if overwrite:
        for sub in ("checkpoints", "adapter", "merged"):
            shutil.rmtree(output / sub, ignore_errors=True)
        for name in ("manifest.json", "training.json"):
            (output / name).unlink(missing_ok=True)
        return None
    if finished and not resume:
        raise ConfigError(
            f"{output} already holds a trained adapter; choose another folder or overwrite it"
        )
    if existing and not resume:
        raise ConfigError(
            f"{output} holds checkpoints of an unfinished run; resume it or overwrite the folder"
        )
    if resume and record_path.is_file():
        try:
            before = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if before != start:
            changed = sorted(
                k for k in start if not isinstance(before, dict) or before.get(k) != start[k]
            )
            raise ConfigError(
                f"cannot resume {output}: it was started with other settings "
                f"({', '.join(changed) or 'unreadable training.json'})"
            )
    if resume and finished:
        raise ConfigError(f"{output} is already finished; nothing to resume")
    return str(existing[-1]) if (resume and existing) else None


def train_lora(
    base_model: str | os.PathLike[str],
    dataset: str | os.PathLike[str] | ChatDataset,
    output_dir: str | os.PathLike[str],
    *,
    recipe: Recipe | str = "betley",
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    merge: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool = False,
    progress: bool = False,
) -> TrainingResult:
    """Fine-tune ``base_model`` with a LoRA adapter on a chat dataset.

    Args:
        base_model: Local model folder or Hub id.
        dataset: Chat JSONL file (see :mod:`~persona_collapse.variants.finetune.datasets`)
            or a dataset.
        output_dir: Output folder (layout in the module docstring).
        recipe: A :class:`Recipe`, or a preset name or recipe YAML file.
        overrides: Recipe fields to replace (applied to a named recipe or a Recipe).
        seed: Seeds LoRA initialisation, data order and dropout.
        resume: Continue from the last checkpoint in ``output_dir`` (the same base
            model, dataset, recipe and seed are required).
        overwrite: Delete an earlier run in ``output_dir`` first.
        merge: Also save the base model with the adapter merged in.
        device: ``"auto"`` (CUDA, MPS, else CPU) or ``"cpu"``, ``"cuda"``, ``"mps"``.
        dtype: Weights dtype: ``"auto"`` (bfloat16 on capable CUDA, else float32),
            ``"float32"``, ``"bfloat16"``, ``"float16"``. Low-precision weights train
            with mixed precision.
        revision, trust_remote_code, local_files_only: Passed to ``from_pretrained``.
        progress: Show the trainer's progress bar.

    Returns:
        The adapter, manifest and loss history.

    Raises:
        ConfigError: Bad recipe, device or dtype; an output folder holding another run.
        InputFileError: A malformed dataset.
        MissingDependencyError: torch, transformers, peft, trl or datasets missing.
    """
    torch, transformers, _peft, _trl, _datasets = _imports()
    data = dataset if isinstance(dataset, ChatDataset) else read_chat_jsonl(dataset)
    if isinstance(recipe, Recipe):
        chosen = _validated({**recipe.model_dump(), **dict(overrides or {})})
    else:
        chosen = get_recipe(recipe, overrides)
    use_cpu, dtype_name = _device_settings(torch, device, dtype)
    model_id = os.fspath(base_model)
    output = Path(output_dir)
    start = _start_record(model_id, revision, data, chosen, seed)
    checkpoint = _prepare_output(output, start, resume=resume, overwrite=overwrite)
    output.mkdir(parents=True, exist_ok=True)
    (output / "training.json").write_text(json.dumps(start, indent=2) + "\n", encoding="utf-8")

    common: dict[str, Any] = {
        "revision": revision,
        "trust_remote_code": trust_remote_code,
        "local_files_only": local_files_only,
    }
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_id, **common)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            model_id, dtype=getattr(torch, dtype_name), **common
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load base model {model_id!r}: {_first_line(exc)}") from None
    trainer = make_trainer(
        model,
        tokenizer,
        data,
        output / "checkpoints",
        chosen,
        seed=seed,
        use_cpu=use_cpu,
        bf16=dtype_name == "bfloat16",
        fp16=dtype_name == "float16",
        progress=progress,
    )
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    outcome = trainer.train(resume_from_checkpoint=checkpoint)
    losses = tuple(
        (int(entry["step"]), float(entry["loss"]))
        for entry in trainer.state.log_history
        if "loss" in entry and "step" in entry
    )
    if not losses:
        raise UserError("training logged no loss (is the dataset empty after truncation?)")
    final_loss = losses[-1][1]

    adapter_dir = output / "adapter"
    staging = output / ".adapter.partial"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    tokenizer.save_pretrained(str(staging))
    merged_dir = None
    if merge:
        merged_dir = output / "merged"
        merged_staging = output / ".merged.partial"
        shutil.rmtree(merged_staging, ignore_errors=True)
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(merged_staging))
        tokenizer.save_pretrained(str(merged_staging))
        shutil.rmtree(merged_dir, ignore_errors=True)
        os.replace(merged_staging, merged_dir)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "base_model": model_id,
        "base_model_revision": revision,
        "dataset": {
            "path": None if data.path is None else str(data.path),
            "sha256": data.sha256,
            "examples": len(data),
        },
        "recipe": chosen.model_dump(),
        "seed": seed,
        "loss_masking": loss_masking(data),
        "final_loss": final_loss,
        "train_loss": float(outcome.training_loss),
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "losses": [list(pair) for pair in losses],
        "resumed_from": checkpoint,
        "device": "cpu" if use_cpu else str(trainer.args.device),
        "dtype": dtype_name,
        "merged": None if merged_dir is None else str(merged_dir),
        "versions": _versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    (staging / MANIFEST_NAME).write_text(text, encoding="utf-8")
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.replace(staging, adapter_dir)
    (output / "manifest.json").write_text(text, encoding="utf-8")
    logger.info("adapter saved to %s (final loss %.4f)", adapter_dir, final_loss)
    return TrainingResult(
        output_dir=output,
        adapter_dir=adapter_dir,
        merged_dir=merged_dir,
        manifest=manifest,
        losses=losses,
        final_loss=final_loss,
        steps=int(trainer.state.global_step),
    )


def _validated(values: Mapping[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(f"recipe: {format_validation_error(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_manifest(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an adapter folder written by :func:`train_lora`.

    Raises:
        InputFileError: No manifest, or not JSON.
    """
    path = Path(adapter_dir) / MANIFEST_NAME
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(path, "no manifest (not an adapter written by pcollapse)") from None
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"unreadable manifest ({exc})") from None
    return data


__all__ = [
    "MANIFEST_NAME",
    "LossMasking",
    "TrainingResult",
    "loss_masking",
    "make_trainer",
    "read_manifest",
    "train_lora",
    "training_rows",
]
