"""Hidden states of persona-only prompts from a local ``transformers`` model (no generation).

Each persona is put into each of several persona-only templates (raw text, no chat
template, no question); one forward pass per batch with ``output_hidden_states``
gives, at the prompt's final non-pad token, the state after every layer (slot 0 =
the embeddings, slot ``i`` = after block ``i``). The states of one *variant* (the
base model, or the base with one PEFT adapter) go to one float16 ``.npz`` file.

Variants share one loaded base model: adapter-free variants are collected first,
then each adapter is loaded onto the same model by PEFT and switched on in turn
(loading an adapter injects its layers into the base model's modules, so the
base's own states must come first).

Resuming: every ``chunk`` prompts are saved atomically as a part file under
``<variant>.parts/``; a killed collection skips the prompts its parts hold, and
the finished file replaces the parts. A part or file made from other inputs
(model, adapter, personas or templates) is detected by its fingerprint and redone.

Scaling on a GPU: prompts are sorted by length and run in batches of
``batch_size`` with right padding (the padding after the final token cannot affect
it under causal attention, so no attention mask is passed and the model keeps its
fused causal attention kernel), so the cost is about (prompts / batch_size) forward
passes; raise ``batch_size`` until memory runs short (``max_batch_tokens`` caps the
padded tokens of a pass, so long prompts go fewer at a time; the states kept per batch
are ``batch x (L+1) x d``, copied to the CPU as float16 at once). A model larger
than one device is loaded with ``device_map="auto"`` (``accelerate`` spreads the
layers over the GPUs and the CPU); inputs go to the device of the embedding layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from persona_collapse.backends.hf import (
    TransformersBackend,
    _accepts,
    _first_line,
    _import_torch,
    _import_transformers,
    _resolve_device,
    _resolve_dtype,
)
from persona_collapse.core.errors import ConfigError, InputFileError, MissingDependencyError
from persona_collapse.core.files import atomic_path

logger = logging.getLogger(__name__)

PERSONA_TEMPLATES: tuple[str, ...] = (
    "Take on the identity described below and speak as that person would.\n\n{persona}",
    "{persona}\n\nThe description above is who you are now; think and reply as this person.",
    "The character you will play in this conversation: {persona}",
    "From here on you are the following individual. {persona} Keep to this role.",
)
"""Persona-only prompts (ours; template 0 is the primary one). ``{persona}`` is replaced."""

STATES_SUFFIX = ".npz"
PARTS_SUFFIX = ".parts"


@dataclass(frozen=True)
class HiddenStates:
    """The states of one variant: ``states[k]`` is prompt ``k`` at every layer slot.

    Prompts are template-major: template 0 for every persona, then template 1, ...
    """

    variant: str
    base_model: str
    adapter: str | None
    states: NDArray[np.float16]
    """``(prompts, layer slots, hidden size)``."""
    persona_ids: NDArray[np.int64]
    template_ids: NDArray[np.int64]
    layer_indices: NDArray[np.int64]
    personas: tuple[str, ...]
    templates: tuple[str, ...]
    fingerprint: str

    def by_template(self, template: int = 0) -> NDArray[np.float16]:
        """``(personas, layer slots, hidden)`` states under one template, in persona order."""
        rows = np.flatnonzero(self.template_ids == template)
        if rows.size == 0:
            raise ValueError(f"template: no prompts use template {template}")
        return self.states[rows[np.argsort(self.persona_ids[rows], kind="stable")]]

    def by_persona(self) -> NDArray[np.float16]:
        """``(personas, templates, layer slots, hidden)``."""
        n_t, n_p = len(self.templates), len(self.personas)
        out = np.empty((n_p, n_t, *self.states.shape[1:]), dtype=self.states.dtype)
        out[self.persona_ids, self.template_ids] = self.states
        return out


@dataclass(frozen=True)
class Variant:
    """One model to read states from: the base (``adapter`` None) or base plus a PEFT adapter."""

    name: str
    adapter: str | None = None


def prompt_texts(
    personas: Sequence[str], templates: Sequence[str]
) -> tuple[list[str], NDArray[np.int64], NDArray[np.int64]]:
    """Every (template, persona) prompt, template-major, with persona and template ids.

    Raises:
        ConfigError: a template without ``{persona}``.
    """
    for k, template in enumerate(templates):
        if "{persona}" not in template:
            raise ConfigError(f"persona template {k} has no '{{persona}}' placeholder")
    texts = [t.replace("{persona}", p) for t in templates for p in personas]
    template_ids = np.repeat(np.arange(len(templates), dtype=np.int64), len(personas))
    persona_ids = np.tile(np.arange(len(personas), dtype=np.int64), len(templates))
    return texts, persona_ids, template_ids


def fingerprint(
    base_model: str, adapter: str | None, personas: Sequence[str], templates: Sequence[str]
) -> str:
    """Digest of what fixes a variant's states (saved parts of other inputs are not reused)."""
    data = json.dumps(
        {"model": base_model, "adapter": adapter, "personas": list(personas), "t": list(templates)},
        ensure_ascii=False,
    )
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:32]


class StateReader:
    """Final-token hidden states of raw texts from one loaded causal LM.

    Build it from a :class:`~persona_collapse.backends.hf.TransformersBackend`
    (:meth:`from_backend`) or load a model for it (:meth:`load`, which accepts
    ``device_map``). Adapters are hot-swapped by :meth:`use_adapter`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        label: str,
        batch_size: int = 8,
        max_batch_tokens: int | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
            bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
            if bad and not (name == "max_batch_tokens" and value is None):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.label = label
        self.batch_size = batch_size
        #: Most padded tokens per forward pass (None: only ``batch_size`` limits a batch).
        self.max_batch_tokens = max_batch_tokens
        self._peft: Any = None
        self._adapters: dict[str, str] = {}
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ConfigError(
                    f"the tokenizer of {label!r} has neither a pad nor an end-of-sequence token"
                )
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        # Only the hidden states are wanted: skip the output projection where the model can.
        self._logits_to_keep = _accepts(model.forward, "logits_to_keep")

    @classmethod
    def from_backend(
        cls, backend: TransformersBackend, *, batch_size: int | None = None
    ) -> StateReader:
        """A reader on the backend's model (which must carry no adapter yet)."""
        if backend.adapter is not None:
            raise ConfigError(
                "hidden states: give the backend without an adapter; adapters are swapped in"
            )
        return cls(
            backend.model,
            backend.tokenizer,
            label=backend.label,
            batch_size=backend.batch_size if batch_size is None else batch_size,
        )

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str],
        *,
        device: str | None = None,
        dtype: str | None = None,
        device_map: str | None = None,
        batch_size: int = 8,
        max_batch_tokens: int | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
    ) -> StateReader:
        """Load a model and tokenizer; ``device_map`` (e.g. ``"auto"``) replaces ``device``.

        Raises:
            MissingDependencyError: torch or transformers (or accelerate for
                ``device_map``) is missing.
            ConfigError: the model or tokenizer cannot be loaded, or a bad option.
        """
        torch = _import_torch()
        transformers = _import_transformers()
        model_id = os.fspath(model)
        device_name = _resolve_device(device) if device_map is None else "cuda"
        dtype_name = _resolve_dtype(dtype, device_name)
        common: dict[str, Any] = {"revision": revision, "local_files_only": local_files_only}
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(model_id, **common)
            options: dict[str, Any] = {"dtype": getattr(torch, dtype_name), **common}
            if device_map is not None:
                options["device_map"] = device_map
            loaded = transformers.AutoModelForCausalLM.from_pretrained(model_id, **options)
        except ImportError as exc:
            raise MissingDependencyError("accelerate", "hf") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot load model {model_id!r}: {_first_line(exc)}") from None
        if device_map is None:
            loaded = loaded.to(device_name)
        return cls(
            loaded,
            tokenizer,
            label=model_id,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    # --- adapters --------------------------------------------------------------------------

    def use_adapter(self, adapter: str | None) -> None:
        """Switch to ``adapter`` (loaded onto the shared model the first time), or to the
        bare base model (None; only before any adapter was loaded)."""
        if adapter is None:
            if self._peft is not None:
                raise ConfigError(
                    "hidden states: adapter-free variants must come before adapters "
                    "(loading an adapter changes the base model's modules)"
                )
            return
        try:
            from peft import PeftModel
        except ImportError:
            raise MissingDependencyError("peft", "finetune") from None
        name = self._adapters.get(adapter)
        try:
            if name is None:
                name = f"variant{len(self._adapters)}"
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self.model, adapter, adapter_name=name)
                    self._peft.eval()
                else:
                    self._peft.load_adapter(adapter, adapter_name=name)
                self._adapters[adapter] = name
            self._peft.set_adapter(name)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot load adapter {adapter!r}: {_first_line(exc)}") from None

    @property
    def _active(self) -> Any:
        return self._peft if self._peft is not None else self.model

    # --- states ----------------------------------------------------------------------------

    def _input_device(self) -> Any:
        return self.model.get_input_embeddings().weight.device

    def final_states(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
    ) -> np.ndarray:
        """``(len(texts), layers + 1, hidden)`` float16 states at each text's last token.

        Texts are sorted by token count and run in batches with right padding: at most
        ``batch_size`` texts (default: the reader's) and, with ``max_batch_tokens``
        (default: the reader's), at most that many padded tokens per batch, so short
        prompts share a pass with many others and long ones with fewer. How texts are
        grouped changes nothing but speed and memory.
        """
        torch = _import_torch()
        size = self.batch_size if batch_size is None else batch_size
        budget = self.max_batch_tokens if max_batch_tokens is None else max_batch_tokens
        if not texts:
            raise ValueError("texts: must not be empty")
        ids = self.tokenizer(list(texts))["input_ids"]
        if any(len(row) == 0 for row in ids):
            raise ValueError("texts: a text has no tokens")
        order = sorted(range(len(texts)), key=lambda k: len(ids[k]))
        batches = plan_batches([len(ids[k]) for k in order], size, budget)
        out: np.ndarray | None = None
        device = self._input_device()
        pad = int(self.tokenizer.pad_token_id)
        for start, stop in batches:
            rows = order[start:stop]
            lengths = [len(ids[k]) for k in rows]
            grid = np.full((len(rows), max(lengths)), pad, dtype=np.int64)
            for i, k in enumerate(rows):
                grid[i, : lengths[i]] = ids[k]
            batch = torch.from_numpy(grid)
            # Right padding under causal attention: the pads come after each row's last
            # token, which never attends to them, and positions start at 0 as in an
            # unpadded pass. So no attention mask is needed, and without one the model
            # takes its fused causal attention path (several times faster than a masked one).
            kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._logits_to_keep else {}
            with torch.inference_mode():
                result = self._active(
                    input_ids=batch.to(device),
                    output_hidden_states=True,
                    use_cache=False,
                    **kwargs,
                )
            last = torch.tensor(lengths) - 1
            picked = torch.stack(
                [
                    h[torch.arange(len(rows), device=h.device), last.to(h.device)]
                    for h in result.hidden_states
                ],
                dim=1,
            )
            block = picked.to("cpu", torch.float16).numpy()
            if out is None:
                out = np.empty((len(texts), *block.shape[1:]), dtype=np.float16)
            out[rows] = block
        if out is None:  # pragma: no cover - texts is not empty
            raise ValueError("texts: must not be empty")
        return out


def plan_batches(lengths: Sequence[int], size: int, budget: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches of ascending ``lengths``: at most ``size``
    rows and, with a ``budget``, at most ``budget`` padded tokens (rows x the longest);
    a row longer than the budget goes alone."""
    out = []
    start = 0
    while start < len(lengths):
        stop = start + 1
        while (
            stop < len(lengths)
            and stop - start < size
            and (budget is None or (stop - start + 1) * lengths[stop] <= budget)
        ):
            stop += 1
        out.append((start, stop))
        start = stop
    return out


# --- files -------------------------------------------------------------------------------------


def states_path(folder: Path, variant: str) -> Path:
    return folder / f"{variant}{STATES_SUFFIX}"


def _write_npz(path: Path, **arrays: Any) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)


def save_states(path: Path, hs: HiddenStates) -> Path:
    """Write one variant's states (float16) atomically."""
    _write_npz(
        path,
        states=hs.states.astype(np.float16, copy=False),
        persona_ids=hs.persona_ids,
        template_ids=hs.template_ids,
        layer_indices=hs.layer_indices,
        personas=np.asarray(hs.personas, dtype=str),
        templates=np.asarray(hs.templates, dtype=str),
        variant=np.asarray(hs.variant),
        base_model=np.asarray(hs.base_model),
        adapter=np.asarray("" if hs.adapter is None else hs.adapter),
        fingerprint=np.asarray(hs.fingerprint),
    )
    return path


def load_states(path: str | os.PathLike[str]) -> HiddenStates:
    """Read a file written by :func:`save_states`.

    Raises:
        InputFileError: missing, unreadable or not a states file.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            adapter = str(data["adapter"])
            return HiddenStates(
                variant=str(data["variant"]),
                base_model=str(data["base_model"]),
                adapter=adapter or None,
                states=data["states"],
                persona_ids=data["persona_ids"].astype(np.int64),
                template_ids=data["template_ids"].astype(np.int64),
                layer_indices=data["layer_indices"].astype(np.int64),
                personas=tuple(str(s) for s in data["personas"]),
                templates=tuple(str(s) for s in data["templates"]),
                fingerprint=str(data["fingerprint"]),
            )
    except FileNotFoundError:
        raise InputFileError(p, "no such file") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputFileError(p, f"not a hidden-states file ({_first_line(exc)})") from None


def _saved_parts(folder: Path, fp: str) -> dict[int, np.ndarray]:
    """Rows already collected in matching part files (stale parts are removed)."""
    done: dict[int, np.ndarray] = {}
    if not folder.is_dir():
        return done
    for part in sorted(folder.glob("part-*.npz")):
        try:
            with np.load(part, allow_pickle=False) as data:
                if str(data["fingerprint"]) != fp:
                    raise ValueError("other inputs")
                for row, state in zip(data["rows"].tolist(), data["states"], strict=True):
                    done[int(row)] = state
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring saved part %s (%s)", part, _first_line(exc))
            part.unlink(missing_ok=True)
    return done


def finished_states(
    folder: Path,
    variant: Variant,
    base_model: str,
    personas: Sequence[str],
    templates: Sequence[str],
) -> Path | None:
    """The variant's states file under ``folder`` if it is complete and made from these
    inputs (then nothing needs the model), else None."""
    target = states_path(folder, variant.name)
    if not target.is_file():
        return None
    try:
        with np.load(target, allow_pickle=False) as data:
            saved = str(data["fingerprint"])
    except (OSError, ValueError, KeyError):
        return None
    return (
        target if saved == fingerprint(base_model, variant.adapter, personas, templates) else None
    )


def collect_variant(
    reader: StateReader,
    variant: Variant,
    personas: Sequence[str],
    templates: Sequence[str],
    folder: Path,
    *,
    chunk: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Collect (or finish, or reuse) one variant's states file under ``folder``.

    Args:
        reader: Holds the model; ``variant.adapter`` is switched on first.
        chunk: Prompts per saved part (the most work a kill can lose).
        progress: Called with ``(variant, done, total)`` after each part.
    """
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    fp = fingerprint(reader.label, variant.adapter, personas, templates)
    target = states_path(folder, variant.name)
    if finished_states(folder, variant, reader.label, personas, templates) is not None:
        logger.info("reusing %s", target)
        return target
    if target.is_file():
        logger.warning("%s was made from other inputs; collecting it again", target)
    texts, persona_ids, template_ids = prompt_texts(personas, templates)
    parts = folder / f"{variant.name}{PARTS_SUFFIX}"
    done = _saved_parts(parts, fp)
    todo = [k for k in range(len(texts)) if k not in done]
    if progress is not None:
        progress(variant.name, len(done), len(texts))
    reader.use_adapter(variant.adapter)
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        block = reader.final_states([texts[k] for k in rows])
        _write_npz(
            parts / f"part-{len(done):08d}.npz",
            rows=np.asarray(rows, dtype=np.int64),
            states=block,
            fingerprint=np.asarray(fp),
        )
        done.update(zip(rows, block, strict=True))
        if progress is not None:
            progress(variant.name, len(done), len(texts))
    states = np.stack([done[k] for k in range(len(texts))]).astype(np.float16, copy=False)
    save_states(
        target,
        HiddenStates(
            variant=variant.name,
            base_model=reader.label,
            adapter=variant.adapter,
            states=states,
            persona_ids=persona_ids,
            template_ids=template_ids,
            layer_indices=np.arange(states.shape[1], dtype=np.int64),
            personas=tuple(personas),
            templates=tuple(templates),
            fingerprint=fp,
        ),
    )
    shutil.rmtree(parts, ignore_errors=True)
    return target


def collect_variants(
    reader: StateReader,
    variants: Sequence[Variant],
    personas: Sequence[str],
    templates: Sequence[str],
    folder: Path,
    *,
    chunk: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Path]:
    """Collect every variant (adapter-free ones first) into ``folder``; ``{name: file}``.

    Raises:
        ConfigError: repeated variant names, no personas or no templates.
    """
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"variant names must be unique, got {names}")
    if len(personas) < 2:
        raise ConfigError(f"hidden states need at least 2 personas, got {len(personas)}")
    if not templates:
        raise ConfigError("hidden states need at least one persona template")
    ordered = sorted(variants, key=lambda v: v.adapter is not None)
    return {
        v.name: collect_variant(
            reader, v, personas, templates, folder, chunk=chunk, progress=progress
        )
        for v in ordered
    }


__all__ = [
    "PERSONA_TEMPLATES",
    "HiddenStates",
    "StateReader",
    "Variant",
    "collect_variant",
    "collect_variants",
    "fingerprint",
    "finished_states",
    "load_states",
    "plan_batches",
    "prompt_texts",
    "save_states",
    "states_path",
]
