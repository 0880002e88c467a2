"""The ``serve-sim`` application: the simulator behind an OpenAI-compatible HTTP API.

Endpoints:

``POST /v1/chat/completions``
    Chat completions with ``n``, ``temperature``, ``seed``, ``max_tokens`` /
    ``max_completion_tokens``, ``logprobs`` and ``top_logprobs``; replies and
    ``usage`` come from :class:`~persona_collapse.backends.simulator.SimulatorBackend`.
``GET /v1/models``
    The served model names.
``GET /stats``, ``POST /stats/reset``
    Request counters (what tests and benchmarks read), see :class:`ServerStats`.
``/v1/files``, ``/v1/fine_tuning/jobs``...
    A simulated fine-tuning API, see :mod:`persona_collapse.serve.fine_tuning`.

Models: ``settings.model`` is answered by ``settings.preset``; every simulator
preset is also served as ``sim-<preset>``; a fine-tuning job that succeeds adds
its ``ft:...`` model (preset chosen by the rule in
:mod:`persona_collapse.serve.fine_tuning`).

Logprobs describe the first completion token only, at the request's temperature.
For instrument prompts each scale value ``k`` appears as the token ``"k"`` and, with share
``settings.space_token_share`` of its probability, as ``" k"``; the probability
that the reply does not start with a rating is spread over a few word tokens
(:data:`NON_RATING_TOKENS`). Probabilities come from the simulator's exact
distributions, so a client that merges ``"3"`` and ``" 3"`` recovers them exactly.
Prompts the simulator answers with its own tokens (judges of open-ended
answers) report the simulator's ``first_token_logprobs``.

Usage: prompt tokens are estimated with :func:`persona_collapse.engine.costs.count_message_tokens`
(the same rule as ``--dry-run``); a system message seen before is reported as
cached input (prompt caching); completion tokens are the simulator's count.

Faults (:class:`FaultSettings`) are drawn per chat request from a seeded
generator: 429 with ``Retry-After``, 500, a response delayed by ``slow_delay``
seconds (beyond a client's timeout), a 200 response whose body is not valid
JSON, and a switch that ignores ``n`` (one choice per request).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from persona_collapse.backends.base import Message, Prompt
from persona_collapse.backends.simulator import PRESETS, SimulatorBackend
from persona_collapse.core.controls import load_items
from persona_collapse.core.errors import BackendError, ConfigError, format_validation_error
from persona_collapse.core.instrument import Instrument, mfq30
from persona_collapse.engine.costs import count_message_tokens
from persona_collapse.serve.fine_tuning import FineTuningService, FineTuningSettings, preset_for

NON_RATING_TOKENS: tuple[tuple[str, float], ...] = (
    ("As", 0.4),
    ("I", 0.3),
    ("Sorry", 0.2),
    ("**", 0.1),
)
"""First tokens (with their shares) that carry the probability of a reply without a rating."""

REASONING_TOKENS = 24
"""Reasoning tokens a simulated reasoning model spends before its answer."""

_CACHE_ENTRIES = 8192


class FaultSettings(BaseModel):
    """Faults injected into chat-completion requests (rates are per request, 0-1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rate_limit_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 429 with a ``Retry-After`` header."""

    retry_after: float = Field(default=1.0, ge=0.0)
    """Seconds sent in ``Retry-After`` (and ``retry-after-ms``) with a 429."""

    server_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 500."""

    slow_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered only after ``slow_delay`` seconds."""

    slow_delay: float = Field(default=30.0, ge=0.0)
    """Delay of a slow response, seconds (set it beyond the client's timeout)."""

    unparseable_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of requests answered 200 with a body that is not valid JSON."""

    ignore_n: bool = False
    """Return one choice whatever ``n`` asks for (as some servers do)."""

    seed: int | None = Field(default=None, ge=0)
    """Seed of the fault draws; None draws from the system's entropy."""

    @model_validator(mode="after")
    def _rates_sum(self) -> FaultSettings:
        total = (
            self.rate_limit_rate + self.server_error_rate + self.slow_rate + self.unparseable_rate
        )
        if total > 1.0 + 1e-12:
            raise ValueError(f"fault rates add up to {total:g}, more than 1")
        return self


class SimServerSettings(BaseModel):
    """Everything ``serve-sim`` serves."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str = "simulator"
    """Model name answered by ``preset`` (every preset is also served as ``sim-<preset>``)."""

    preset: str = "base"
    """Simulator preset answering ``model``."""

    seed: int = Field(default=0, ge=0)
    """Simulator seed; with the request seed and prompt it fixes every reply."""

    sim_params: dict[str, float] = Field(default_factory=dict)
    """Overrides of the simulator parameters (see ``SimulatorParams``), for every model."""

    faults: FaultSettings = Field(default_factory=FaultSettings)
    """Fault injection."""

    reasoning: Literal["off", "o-series", "thinking"] = "off"
    """Simulate a reasoning model: ``o-series`` rejects ``max_tokens`` and ``logprobs``
    (400) and needs ``max_completion_tokens``; ``thinking`` accepts them but spends
    :data:`REASONING_TOKENS` tokens reasoning before it answers."""

    space_token_share: float = Field(default=0.2, ge=0.0, le=1.0)
    """Share of each rating's first-token probability given to the token ``" k"``."""

    api_key_env: str | None = None
    """Require ``Authorization: Bearer <key>`` with the key in this environment variable."""

    echo_key_in_errors: bool = False
    """Fault: quote the client's key in 401 replies (tests that clients never repeat it)."""

    fine_tuning: FineTuningSettings = Field(default_factory=FineTuningSettings)
    """The simulated files and fine-tuning API (progress, failures, preset rule)."""

    control_items: list[str] = Field(default_factory=list)
    """Capability items files (MMLU/GSM8K JSON) whose prompts the simulator recognises,
    so that control runs collected over HTTP get the in-process answers."""


@dataclass
class ServerStats:
    """Counters of the requests a server received (read them at ``GET /stats``).

    Attributes:
        requests: Chat-completion requests received (faulted ones included).
        outcomes: Requests per outcome: ``ok``, ``429``, ``500``, ``slow``,
            ``unparseable``, ``401``, ``400``, ``404``.
        choices: Choices returned in successful responses.
        n_requested: Requests per ``n`` asked for.
        logprob_requests: Successful requests that asked for logprobs.
        prompt_tokens, completion_tokens, cached_tokens: ``usage`` totals returned.
        extra_fields: Request fields outside the OpenAI schema seen (e.g. ``enable_thinking``).
        fine_tuning: Files and fine-tuning requests: ``uploads``, ``file_retrievals``,
            ``jobs_created``, ``job_retrievals``, ``job_lists``, ``event_lists``,
            ``checkpoint_lists``, ``cancels``, and refused ones by status (``400``,
            ``401``, ``404``).
    """

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    choices: int = 0
    n_requested: Counter[int] = field(default_factory=Counter)
    logprob_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    extra_fields: Counter[str] = field(default_factory=Counter)
    fine_tuning: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "choices": self.choices,
            "n_requested": {str(k): v for k, v in sorted(self.n_requested.items())},
            "logprob_requests": self.logprob_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "extra_fields": dict(self.extra_fields),
            "fine_tuning": dict(self.fine_tuning),
        }

    def reset(self) -> None:
        """Zero every counter."""
        fresh = ServerStats()
        for name in self.__dataclass_fields__:
            current = getattr(self, name)
            if isinstance(current, Counter):
                current.clear()  # in place: the fine-tuning service holds a reference
            else:
                setattr(self, name, getattr(fresh, name))


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[Any] | None = None


class _ChatRequest(BaseModel):
    """The fields of a chat-completion request the simulator reads; others are recorded."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[_ChatMessage] = Field(min_length=1)
    n: int | None = Field(default=None, ge=1, le=128)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool | None = None


def error_body(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _text_of(content: str | list[Any] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
    return "".join(str(p) for p in parts)


class SimService:
    """The server's state: simulators per model, fault generator, prompt cache, counters.

    Args:
        settings: What to serve.
        instrument: Instrument the prompts come from (default MFQ-30).

    Raises:
        ConfigError: Unknown preset or invalid simulator parameters.
    """

    def __init__(self, settings: SimServerSettings, *, instrument: Instrument | None = None):
        self.settings = settings
        self.instrument = instrument if instrument is not None else mfq30()
        self.stats = ServerStats()
        self._faults = random.Random(settings.faults.seed)
        self._seen_systems: OrderedDict[str, None] = OrderedDict()
        self._models: dict[str, SimulatorBackend] = {}
        self.fine_tuned_presets: dict[str, str] = {}
        """Fine-tuned model id -> the simulator preset answering it."""
        params: dict[str, Any] = dict(settings.sim_params)
        # Items files validate here, before the server binds (one-line errors).
        params["control_items"] = tuple(load_items(path) for path in settings.control_items)
        self._models[settings.model] = SimulatorBackend(
            settings.preset, seed=settings.seed, instrument=self.instrument, **params
        )
        for preset in PRESETS:
            self._models[f"sim-{preset}"] = SimulatorBackend(
                preset, seed=settings.seed, instrument=self.instrument, **params
            )
        self._scale = self.instrument.scale
        self._ids = itertools.count(1)
        self._sim_params = params
        for fragment, preset in settings.fine_tuning.presets.items():
            if preset not in PRESETS:
                raise ConfigError(
                    f"serve-sim: fine_tuning.presets[{fragment!r}]: unknown preset {preset!r}; "
                    f"known: {', '.join(PRESETS)}"
                )
        self.fine_tuning = FineTuningService(
            settings.fine_tuning,
            register_model=self.register_fine_tuned,
            counters=self.stats.fine_tuning,
        )

    def register_fine_tuned(self, model_id: str, base_model: str, training_file: str) -> None:
        """Serve a fine-tuned model (preset by the rule of :func:`preset_for`)."""
        preset = preset_for(
            training_file,
            base_model,
            presets=self.settings.fine_tuning.presets,
            default_preset=self.settings.preset,
        )
        if preset not in PRESETS:
            preset = self.settings.preset
        self._models[model_id] = SimulatorBackend(
            preset, seed=self.settings.seed, instrument=self.instrument, **self._sim_params
        )
        self.fine_tuned_presets[model_id] = preset

    @property
    def model_names(self) -> list[str]:
        """Served model names."""
        return list(self._models)

    def draw_fault(self) -> str | None:
        """The fault of the next request (None: answer normally)."""
        f = self.settings.faults
        u = self._faults.random()
        for name, rate in (
            ("429", f.rate_limit_rate),
            ("500", f.server_error_rate),
            ("slow", f.slow_rate),
            ("unparseable", f.unparseable_rate),
        ):
            if u < rate:
                return name
            u -= rate
        return None

    def _cached_tokens(self, messages: list[_ChatMessage]) -> int:
        """Tokens of the system message if it was seen before (a prompt-cache hit)."""
        system = "\n".join(_text_of(m.content) for m in messages if m.role == "system")
        if not system:
            return 0
        key = hashlib.sha256(system.encode()).hexdigest()
        if key in self._seen_systems:
            self._seen_systems.move_to_end(key)
            return count_message_tokens([{"content": system}])
        self._seen_systems[key] = None
        if len(self._seen_systems) > _CACHE_ENTRIES:
            self._seen_systems.popitem(last=False)
        return 0

    async def _first_token_logprobs(
        self, backend: SimulatorBackend, prompt: Prompt, temperature: float, top: int
    ) -> list[tuple[str, float]]:
        """Top first-token logprobs, most likely first (see the module docstring).

        Prompts the simulator answers with its own tokens (judge prompts of the
        open-ended questions) take its ``first_token_logprobs``; instrument prompts
        the distribution over the rating scale.
        """
        own = getattr(backend, "first_token_logprobs", None)
        if own is not None:
            entries = own(prompt, temperature=temperature, top=top)
            if entries is not None:
                return list(entries)[:top]
        dist = await backend.distributions([prompt], scale=self._scale, temperature=temperature)
        return self._logprob_entries(dist[0].probs, dist[0].mass)[:top]

    def _logprob_entries(self, probs: tuple[float, ...], mass: float) -> list[tuple[str, float]]:
        share = self.settings.space_token_share
        entries: list[tuple[str, float]] = []
        for value, p in zip(self._scale, probs, strict=True):
            for token, part in ((str(value), 1.0 - share), (f" {value}", share)):
                prob = p * mass * part
                if prob > 0.0:
                    entries.append((token, math.log(prob)))
        rest = max(1.0 - mass, 0.0)
        for token, part in NON_RATING_TOKENS:
            if rest * part > 0.0:
                entries.append((token, math.log(rest * part)))
        entries.sort(key=lambda e: -e[1])
        return entries

    async def complete(self, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer one chat-completion request body: ``(status, JSON body)``."""
        try:
            req = _ChatRequest.model_validate(body)
        except ValidationError as exc:
            self.stats.outcomes["400"] += 1
            return 400, error_body(format_validation_error(exc), "invalid_request_error")
        for name in req.model_extra or {}:
            self.stats.extra_fields[name] += 1
        backend = self._models.get(req.model)
        if backend is None:
            self.stats.outcomes["404"] += 1
            return 404, error_body(
                f"The model '{req.model}' does not exist",
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
        if req.stream:
            self.stats.outcomes["400"] += 1
            return 400, error_body(
                "streaming is not supported by serve-sim", "invalid_request_error", param="stream"
            )
        reasoning = self.settings.reasoning
        if reasoning == "o-series":
            if req.max_tokens is not None:
                self.stats.outcomes["400"] += 1
                return 400, error_body(
                    "Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.",
                    "invalid_request_error",
                    param="max_tokens",
                    code="unsupported_parameter",
                )
            if req.logprobs:
                self.stats.outcomes["400"] += 1
                return 400, error_body(
                    "Unsupported parameter: 'logprobs' is not supported with this model.",
                    "invalid_request_error",
                    param="logprobs",
                    code="unsupported_parameter",
                )
        n = req.n or 1
        self.stats.n_requested[n] += 1
        served_n = 1 if self.settings.faults.ignore_n else n
        temperature = 1.0 if req.temperature is None else req.temperature
        budget = req.max_completion_tokens or req.max_tokens or 256
        thinking = REASONING_TOKENS if reasoning != "off" else 0
        answer_budget = budget - thinking
        messages = tuple(
            Message(m.role if m.role in ("system", "assistant") else "user", _text_of(m.content))  # type: ignore[arg-type]
            for m in req.messages
        )
        prompt = Prompt(messages)
        try:
            if answer_budget >= 1:
                generation = (
                    await backend.generate(
                        [prompt],
                        n=served_n,
                        temperature=temperature,
                        max_tokens=answer_budget,
                        seed=req.seed,
                    )
                )[0]
                texts = list(generation.texts)
                answer_tokens = generation.usage.completion_tokens
            else:
                texts = [""] * served_n
                answer_tokens = 0
            top: list[tuple[str, float]] = []
            if req.logprobs:
                top = await self._first_token_logprobs(
                    backend,
                    prompt,
                    temperature if temperature > 0 else 1.0,
                    max(req.top_logprobs or 0, 1),
                )
        except BackendError as exc:
            self.stats.outcomes["400"] += 1
            return 400, error_body(str(exc), "invalid_request_error", param="messages")
        cached = self._cached_tokens(req.messages)
        prompt_tokens = count_message_tokens([{"content": m.content} for m in messages])
        completion_tokens = answer_tokens + thinking * served_n
        choices = []
        for index, text in enumerate(texts):
            logprobs = None
            if req.logprobs:
                logprobs = self._choice_logprobs(text, top, req.top_logprobs or 0)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["reasoning_content"] = "Let me weigh this carefully."
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": "length" if answer_budget < 1 else "stop",
                }
            )
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        if thinking:
            usage["completion_tokens_details"] = {"reasoning_tokens": thinking * served_n}
        stats = self.stats
        stats.outcomes["ok"] += 1
        stats.choices += len(choices)
        stats.logprob_requests += bool(req.logprobs)
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        stats.cached_tokens += cached
        return 200, {
            "id": f"chatcmpl-sim-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": f"serve-sim-{self.settings.seed}",
        }

    @staticmethod
    def _choice_logprobs(
        text: str, top: list[tuple[str, float]], top_n: int
    ) -> dict[str, Any] | None:
        if not text:
            return {"content": [], "refusal": None}
        first = text.split()[0] if text.split() else text
        lookup = dict(top)
        # The sampled token's own logprob; a token outside the top list gets a low value.
        own = lookup.get(first, min(lookup.values(), default=0.0) - 1.0)
        entry = {
            "token": first,
            "logprob": own,
            "bytes": list(first.encode()),
            "top_logprobs": [
                {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[:top_n]
            ],
        }
        return {"content": [entry], "refusal": None}


def settings_from_options(**options: Any) -> SimServerSettings:
    """Validate ``serve-sim`` settings from plain keyword options (one-line errors).

    Raises:
        ConfigError: An invalid or unknown option.
    """
    try:
        return SimServerSettings.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"serve-sim: {format_validation_error(exc)}") from None


__all__ = [
    "NON_RATING_TOKENS",
    "REASONING_TOKENS",
    "FaultSettings",
    "ServerStats",
    "SimServerSettings",
    "SimService",
    "settings_from_options",
]
