"""Backend ``"openai"``: any OpenAI-compatible chat-completions server, via the official SDK.

Works with OpenAI, OpenRouter, Together, Fireworks, the OpenAI-compatible
endpoints of Anthropic and Google, vLLM and llama.cpp servers, and ``pcollapse
serve-sim``. The API key is read from the environment variable the config
names (``api_key_env``); it is never stored, logged or put in an error message.

Protocols (recorded in each run's metadata, see :attr:`OpenAIBackend.protocols_used`):

``short-1-token``
    Sampling mode: one request per cell asks for all its missing repetitions
    with ``n`` (the prompt is billed once) and the engine's ``max_tokens``.
    An endpoint that returns fewer choices than asked is remembered as ignoring
    ``n``; from then on it is asked for one choice per request and the engine
    asks again for the rest (an endpoint that rejects ``n > 1`` with HTTP 400 is
    handled the same way).
``logprobs``
    Exact mode: one request per cell with ``max_tokens=1``, ``logprobs`` and
    ``top_logprobs``, at temperature 1 so every server returns the model's own
    distribution; see :func:`scale_probabilities` for how tokens become the
    probability of each scale value and how the run temperature is applied.
``reasoning-long``
    Reasoning models that reject ``max_tokens`` (o-series) or spend their first
    tokens thinking (thinking modes return an empty answer cut by the length
    limit): the backend says so once, then sends ``max_completion_tokens`` =
    ``reasoning_max_tokens`` and the engine parses the rating from the answer.
    Such models cannot serve exact mode (their first token is not the answer).

Retries, backoff and concurrency live in the engine: the SDK's own retries are
off (``max_retries=0``). Failures become :class:`TransientBackendError` (429,
408, 409, 5xx, timeouts, connection errors and unreadable bodies; with the
server's ``Retry-After``, and ``rate_limited`` set on 429) or
:class:`BackendError` (other 4xx).

Several ``base_url`` values (replicas of one model) are used round-robin; an
endpoint that fails with a connection error, timeout or 5xx is skipped for
``unhealthy_cooldown`` seconds while others are healthy.
"""

from __future__ import annotations

import copy
import difflib
import email.utils
import json
import logging
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from persona_collapse.backends.base import (
    Backend,
    EndpointBehaviour,
    Generation,
    ProbeMode,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.core.errors import (
    BackendError,
    ConfigError,
    MissingDependencyError,
    TransientBackendError,
)
from persona_collapse.core.prompts import extract_rating
from persona_collapse.core.secrets import read_key, scrub

logger = logging.getLogger(__name__)

PROTOCOL_SHORT = "short-1-token"
PROTOCOL_REASONING = "reasoning-long"
PROTOCOL_LOGPROBS = "logprobs"

MissingPolicy = Literal["floor", "zero"]
TokenParameter = Literal["max_tokens", "max_completion_tokens"]

LOGPROB_TEMPERATURE = 1.0
"""Temperature of logprob requests; the run temperature is applied afterwards."""

_TRANSIENT_STATUSES = frozenset({408, 409, 429})
PROBE_MAX_TOKENS = 24
"""Completion length of preflight probes: long enough that two samples from a server
that really samples differ, so identical replies reveal greedy decoding."""
PROBE_SEEDS = (8_191, 131_071, 524_287)
"""Seeds of the preflight's identical requests (different, so seeded servers vary too)."""
GREEDY_FIX = (
    "turn sampling on: for transformers serve add the backend option extra_body "
    '{"generation_config": "{\\"do_sample\\": true}"}; other servers have their own '
    "switch; or measure with mode: exact"
)
_SECRET_MARKERS = ("key", "token", "secret", "password", "auth", "credential")
# Characters tokenizers put in front of a token to mark a leading space.
_SPACE_MARKERS = " \t\r\n\u2581\u0120"


@dataclass(frozen=True)
class LogprobDistribution:
    """Probability of each scale value derived from first-token logprobs.

    Attributes:
        probs: Probabilities of the scale values at the requested temperature (sum 1).
        mass: Probability the model put on scale values (at the logprobs' own
            temperature, before renormalising), in [0, 1].
        missing: Scale values with no token among the top logprobs.
        floor_logprob: Logprob given to missing values (``"floor"``), else None.
    """

    probs: tuple[float, ...]
    mass: float
    missing: tuple[int, ...]
    floor_logprob: float | None

    def scale_distribution(
        self,
        *,
        top_logprobs: Sequence[tuple[str, float]],
        sampled: str | None,
        scale: Sequence[int],
        missing_policy: MissingPolicy,
        usage: Usage,
    ) -> ScaleDistribution:
        """The backend answer for one cell, with the logprobs it came from kept in ``raw``.

        Args:
            top_logprobs: The first token's ``(token, logprob)`` pairs this came from.
            sampled: The token the server sampled, if it says.
            scale: The scale values.
            missing_policy: The policy applied to values without a token.
            usage: Token usage of the request.
        """
        raw = {
            "protocol": PROTOCOL_LOGPROBS,
            "request_temperature": LOGPROB_TEMPERATURE,
            "top_logprobs": [[t, lp] for t, lp in top_logprobs],
            "sampled": sampled,
            "missing": list(self.missing),
            "missing_policy": missing_policy,
            "floor_logprob": self.floor_logprob,
        }
        return ScaleDistribution(
            probs=self.probs,
            scale=tuple(int(v) for v in scale),
            mass=self.mass,
            raw=raw,
            usage=usage,
        )


def scale_value_of(token: str, scale: Sequence[int]) -> int | None:
    """The scale value a token stands for (``"3"``, ``" 3"``, ``"▁3"`` -> 3), else None."""
    text = token.strip(_SPACE_MARKERS)
    if not text or not (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
        return None
    value = int(text)
    return value if value in scale else None


def scale_probabilities(
    top_logprobs: Sequence[tuple[str, float]],
    scale: Sequence[int],
    *,
    temperature: float = 1.0,
    missing: MissingPolicy = "floor",
) -> LogprobDistribution:
    """Turn a first token's top logprobs into the probability of each scale value.

    Tokens that stand for the same value (``"3"``, ``" 3"``) are merged:
    ``p(k) = sum exp(logprob)`` over them. A value with no token among the top
    logprobs gets, with ``missing="floor"``, the probability of the least likely
    listed token (``exp(min logprob)``; the reference study's choice: it was at
    most that likely), with ``missing="zero"``, probability 0 (if no value was
    listed at all, ``"zero"`` falls back to ``"floor"``: uniform). ``mass`` is the
    sum of the listed values' probabilities. The distribution is then
    renormalised and re-tempered: ``p_T ∝ p^(1/T)`` (``T = 0``: all probability on
    the most likely value, shared among ties).

    Args:
        top_logprobs: ``(token, logprob)`` pairs of the first completion token.
        scale: The scale values, ascending.
        temperature: Target temperature relative to the logprobs' own (>= 0).
        missing: Policy for values without a token, ``"floor"`` or ``"zero"``.

    Returns:
        The :class:`LogprobDistribution`.

    Raises:
        ValueError: Empty ``top_logprobs`` or ``scale``, a negative temperature,
            non-finite logprobs or an unknown policy.
    """
    if missing not in ("floor", "zero"):
        raise ValueError(f"missing: expected 'floor' or 'zero', got {missing!r}")
    if not scale:
        raise ValueError("scale: must not be empty")
    if not top_logprobs:
        raise ValueError("top_logprobs: must not be empty")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature: must be finite and >= 0, got {temperature!r}")
    values = [int(v) for v in scale]
    found: dict[int, float] = {}
    lowest = math.inf
    for token, logprob in top_logprobs:
        lp = float(logprob)
        if math.isnan(lp) or lp > 1e-9:
            raise ValueError(f"top_logprobs: invalid logprob {logprob!r} for token {token!r}")
        lowest = min(lowest, lp)
        value = scale_value_of(token, values)
        if value is not None and lp > -math.inf:
            found[value] = found.get(value, 0.0) + math.exp(lp)
    mass = min(sum(found.values()), 1.0)
    absent = tuple(v for v in values if v not in found)
    use_floor = missing == "floor" or not found
    floor = lowest if use_floor and math.isfinite(lowest) else None
    raw = [found.get(v, math.exp(floor) if floor is not None else 0.0) for v in values]
    if sum(raw) <= 0.0:
        raw = [1.0] * len(values)  # every listed logprob was -inf: nothing to go on
    probs = _retemper(raw, temperature)
    return LogprobDistribution(tuple(probs), mass, absent, floor)


def _retemper(raw: Sequence[float], temperature: float) -> list[float]:
    """Renormalise ``raw`` and apply ``p_T ∝ p^(1/T)`` in log space."""
    if temperature == 0.0:
        top = max(raw)
        winners = [1.0 if p == top else 0.0 for p in raw]
        return [w / sum(winners) for w in winners]
    logs = [math.log(p) / temperature if p > 0 else -math.inf for p in raw]
    peak = max(logs)
    exps = [math.exp(lp - peak) if lp > -math.inf else 0.0 for lp in logs]
    total = sum(exps)
    return [e / total for e in exps]


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a server asks to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or date)."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    text = lowered.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment (what may appear in logs and stores)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _scrub_settings(value: Any) -> Any:
    """Drop secret-looking keys at every depth of JSON-like data."""
    if isinstance(value, Mapping):
        return {
            str(k): _scrub_settings(v)
            for k, v in value.items()
            if not any(m in str(k).lower() for m in _SECRET_MARKERS)
        }
    if isinstance(value, list | tuple):
        return [_scrub_settings(v) for v in value]
    return value


class _Endpoint:
    """One base URL: its client, whether it honours ``n``, and its health."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = public_url(url)
        self.client: Any = None
        self.honours_n: bool | None = None
        self.unhealthy_until = 0.0

    def healthy(self, now: float) -> bool:
        return now >= self.unhealthy_until


class OpenAIBackend(Backend):
    """Backend ``"openai"`` (see the module docstring for the protocols).

    Args:
        model: Model name sent to the server.
        base_url: Server URL ending in ``/v1`` (None: OpenAI), or several URLs of
            replicas serving the same model (used round-robin).
        api_key_env: Environment variable holding the API key; None for servers
            without authentication (a placeholder key is sent).
        extra_body: Extra request fields passed through unchanged (e.g.
            ``{"chat_template_kwargs": {"enable_thinking": false}}``).
        timeout: Seconds before a request is abandoned (then retried by the engine).
        missing_logprob: Exact mode: probability of scale values absent from the top
            logprobs, ``"floor"`` or ``"zero"`` (see :func:`scale_probabilities`).
        top_logprobs: Exact mode: number of top logprobs asked for (1-20).
        min_scale_mass: Exact mode: the collection engine counts and warns about
            instrument cells whose on-scale mass is below this (0-1).
        reasoning_max_tokens: Completion budget of the reasoning protocol.
        token_parameter: Name of the completion-length parameter of the short protocol.
        unhealthy_cooldown: Seconds a failing endpoint is skipped (several URLs only).

    Raises:
        ConfigError: Invalid option, or the ``api_key_env`` variable is not set.
        MissingDependencyError: The ``openai`` package is not installed.
    """

    name = "openai"
    uses_endpoint = True
    default_api_key_env = "OPENAI_API_KEY"
    context_options = frozenset({"min_scale_mass"})
    max_batch_size = 1

    def __init__(
        self,
        model: str,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        extra_body: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        missing_logprob: MissingPolicy = "floor",
        top_logprobs: int = 20,
        min_scale_mass: float = 0.5,
        reasoning_max_tokens: int = 2048,
        token_parameter: TokenParameter = "max_tokens",
        unhealthy_cooldown: float = 10.0,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise MissingDependencyError("openai", "openai") from None
        self._openai = openai
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("openai backend: 'model' must be a non-empty model name")
        urls = [base_url] if base_url is None or isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigError("openai backend: 'base_url' must not be an empty list")
        for url in urls:
            if url is not None and not (
                isinstance(url, str) and urlsplit(url).scheme in ("http", "https")
            ):
                raise ConfigError(f"openai backend: base_url {url!r} is not an http(s) URL")
        if missing_logprob not in ("floor", "zero"):
            raise ConfigError(
                "openai backend: missing_logprob must be 'floor' or 'zero', "
                f"got {missing_logprob!r}"
            )
        if not (isinstance(top_logprobs, int) and 1 <= top_logprobs <= 20):
            raise ConfigError(f"openai backend: top_logprobs must be 1-20, got {top_logprobs!r}")
        if not (0.0 <= float(min_scale_mass) <= 1.0):
            raise ConfigError(f"openai backend: min_scale_mass must be 0-1, got {min_scale_mass!r}")
        if not (math.isfinite(float(timeout)) and float(timeout) > 0):
            raise ConfigError(f"openai backend: timeout must be > 0 seconds, got {timeout!r}")
        if not (isinstance(reasoning_max_tokens, int) and reasoning_max_tokens >= 16):
            raise ConfigError(
                f"openai backend: reasoning_max_tokens must be an integer >= 16, "
                f"got {reasoning_max_tokens!r}"
            )
        if token_parameter not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(
                "openai backend: token_parameter must be 'max_tokens' or "
                f"'max_completion_tokens', got {token_parameter!r}"
            )
        if extra_body is not None and not isinstance(extra_body, Mapping):
            raise ConfigError("openai backend: extra_body must be a mapping of request fields")
        if api_key_env is not None and not read_key(api_key_env):
            raise ConfigError(
                f"openai backend: environment variable {api_key_env} is not set; export the "
                "API key there (or set api_key_env: null on the backend for a server without "
                "authentication)"
            )
        self.model = model
        self.api_key_env = api_key_env
        self.extra_body: dict[str, Any] = dict(extra_body or {})
        self.timeout = float(timeout)
        self.missing_logprob: MissingPolicy = missing_logprob
        self.top_logprobs = top_logprobs
        self.min_scale_mass = float(min_scale_mass)
        self.reasoning_max_tokens = reasoning_max_tokens
        self.token_parameter: TokenParameter = token_parameter
        self.unhealthy_cooldown = float(unhealthy_cooldown)
        self._endpoints = [_Endpoint(u or "https://api.openai.com/v1") for u in urls]
        self._next = 0
        self._reasoning = False
        self.protocols_used: set[str] = set()
        self.low_mass_cells = 0
        self.behaviours: list[EndpointBehaviour] = []

    # --- public state ---------------------------------------------------------------------

    @property
    def protocol(self) -> str:
        """Protocol of sampling requests now (``short-1-token`` or ``reasoning-long``)."""
        return PROTOCOL_REASONING if self._reasoning else PROTOCOL_SHORT

    @property
    def endpoints(self) -> list[str]:
        """Endpoint URLs without credentials."""
        return [e.label for e in self._endpoints]

    def describe(self) -> dict[str, Any]:
        """Model, pass-through fields and logprob settings (no key, no endpoints).

        Endpoints are left out on purpose: replicas may change between sessions of a
        run. They are recorded in the run metadata instead (:meth:`run_metadata`).
        """
        return {
            "backend": self.name,
            "model": self.model,
            "extra_body": _scrub_settings(self.extra_body),
            "missing_logprob": self.missing_logprob,
            "top_logprobs": self.top_logprobs,
        }

    def run_metadata(self) -> dict[str, Any]:
        """What to record with a run: protocols used, endpoints and their ``n`` support,
        and what the preflight learned about each endpoint (``preflight``)."""
        data: dict[str, Any] = {
            "protocols": sorted(self.protocols_used),
            "endpoints": self.endpoints,
            "honours_n": {e.label: e.honours_n for e in self._endpoints},
        }
        if self.behaviours:
            data["preflight"] = [b.to_dict() for b in self.behaviours]
        return data

    def preflight_key(self) -> str:
        """Endpoints, model and request settings: one check per distinct combination."""
        return json.dumps({**self.describe(), "endpoints": self.endpoints}, sort_keys=True)

    async def preflight(
        self, prompt: Prompt, *, mode: ProbeMode, scale: Sequence[int]
    ) -> list[EndpointBehaviour]:
        """Ask every endpoint once: reachable, key accepted, model served, and how it
        behaves (``n``, logprobs, temperature). What it learns about ``n`` is kept for
        the run, so the run does not rediscover it."""
        try:
            self.behaviours = [
                await self._probe(endpoint, prompt, mode, scale) for endpoint in self._endpoints
            ]
        finally:
            # The clients belong to this event loop; the run makes new ones in its own.
            await self.aclose()
        return list(self.behaviours)

    async def _models(self, endpoint: _Endpoint) -> list[str] | None:
        """Model ids of ``GET /models``; None where the server does not offer the list.

        Raises:
            BackendError: The server cannot be reached or refuses the key.
        """
        client = self._client(endpoint)
        try:
            content = await client.get("/models", cast_to=bytes, options=self._auth_options())
            data = json.loads(content)
        except ValueError:
            return None  # not a JSON list: the server does not offer one
        except self._openai.OpenAIError as exc:
            converted = self._convert(exc, endpoint)
            status = getattr(exc, "status_code", None)
            if isinstance(converted, TransientBackendError) and status is None:
                raise converted from None  # unreachable or no answer
            if status in (401, 403):
                raise converted from None
            return None
        items = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            return None
        return [str(m.get("id")) for m in items if isinstance(m, Mapping) and m.get("id")]

    async def _probe(
        self, endpoint: _Endpoint, prompt: Prompt, mode: ProbeMode, scale: Sequence[int]
    ) -> EndpointBehaviour:
        label, model = endpoint.label, self.model
        try:
            served = await self._models(endpoint)
        except BackendError as exc:
            return EndpointBehaviour(label, model, problems=(_problem(exc),))
        hint = ""
        if served:
            close = difflib.get_close_matches(model, served, n=3, cutoff=0.5)
            if model not in served:
                hint = "; the server lists " + (
                    "similar: " + ", ".join(repr(c) for c in close)
                    if close
                    else ", ".join(repr(m) for m in served[:5])
                )
        if mode == "exact":
            try:
                await self._on(endpoint).distributions([prompt], scale=scale, temperature=1.0)
            except BackendError as exc:
                if isinstance(exc, TransientBackendError):
                    return EndpointBehaviour(label, model, warnings=(_problem(exc),))
                return EndpointBehaviour(label, model, problems=(_problem(exc) + hint,))
            return EndpointBehaviour(label, model, logprobs=True)
        # The run's own request path: it learns (and keeps, on the shared endpoint)
        # whether n is honoured, and switches protocol for reasoning models, once.
        pinned = self._on(endpoint)
        texts: list[str] = []
        try:
            for seed in PROBE_SEEDS:
                ask = 2 if endpoint.honours_n is not False and not texts else 1
                (generation,) = await pinned.generate(
                    [prompt], n=ask, temperature=1.0, max_tokens=PROBE_MAX_TOKENS, seed=seed
                )
                texts.extend(t.strip() for t in generation.texts)
                if len(set(texts)) > 1 or len(texts) >= len(PROBE_SEEDS):
                    break
        except BackendError as exc:
            if isinstance(exc, TransientBackendError):
                return EndpointBehaviour(label, model, warnings=(_problem(exc),))
            return EndpointBehaviour(label, model, problems=(_problem(exc) + hint,))
        self._reasoning = pinned._reasoning
        warnings: list[str] = []
        if endpoint.honours_n is False:
            warnings.append(
                f"{label}: model {model!r} ignores n (one completion per request): each "
                "repetition costs a request of its own (see --dry-run --preflight)"
            )
        varies: bool | None = None
        if len([t for t in texts if t]) >= 2:
            varies = len(set(texts)) > 1
            if not varies:
                warnings.append(
                    f"{label}: model {model!r} gave {len(texts)} identical replies to identical "
                    "requests at temperature 1 with different seeds: the server seems to ignore "
                    "temperature (greedy decoding), so every repetition would be the same "
                    f"(σ̄ = 0); {GREEDY_FIX}"
                )
        unparseable = [extract_rating(t, scale) is None for t in texts]
        return EndpointBehaviour(
            label,
            model,
            warnings=tuple(warnings),
            honours_n=endpoint.honours_n,
            varies_with_temperature=varies,
            unparseable_share=sum(unparseable) / len(unparseable) if unparseable else None,
        )

    def _on(self, endpoint: _Endpoint) -> OpenAIBackend:
        """This backend, with requests pinned to ``endpoint`` (for per-endpoint probes)."""
        pinned = copy.copy(self)
        pinned._endpoints = [endpoint]
        pinned._next = 0
        return pinned

    # --- plumbing -------------------------------------------------------------------------

    def _client(self, endpoint: _Endpoint) -> Any:
        if endpoint.client is None:
            openai = self._openai
            key = read_key(self.api_key_env)
            endpoint.client = openai.AsyncOpenAI(
                # Without a key, a placeholder stops the SDK reading $OPENAI_API_KEY, and
                # each request omits the Authorization header (see _create).
                api_key=key or "no-key",
                base_url=endpoint.url,
                timeout=self.timeout,
                max_retries=0,
            )
        return endpoint.client

    def _auth_options(self) -> dict[str, Any]:
        """Per-request options: without a key, no ``Authorization`` header at all."""
        if self.api_key_env is None:
            return {"headers": {"Authorization": self._openai.Omit()}}
        return {}

    def _pick(self) -> _Endpoint:
        """Next endpoint round-robin, skipping unhealthy ones while a healthy one exists."""
        now = time.monotonic()
        count = len(self._endpoints)
        for offset in range(count):
            endpoint = self._endpoints[(self._next + offset) % count]
            if endpoint.healthy(now):
                self._next = (self._next + offset + 1) % count
                return endpoint
        return min(self._endpoints, key=lambda e: e.unhealthy_until)

    def _mark_unhealthy(self, endpoint: _Endpoint) -> None:
        if len(self._endpoints) > 1:
            endpoint.unhealthy_until = time.monotonic() + self.unhealthy_cooldown

    def _convert(self, exc: Exception, endpoint: _Endpoint) -> BackendError:
        """The engine's error type for an SDK exception (message scrubbed of secrets)."""
        openai = self._openai
        where = f"{endpoint.label}"
        if isinstance(exc, openai.APITimeoutError):
            self._mark_unhealthy(endpoint)
            return TransientBackendError(f"{where}: no response within {self.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            self._mark_unhealthy(endpoint)
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "connection"
            return TransientBackendError(f"{where}: connection failed ({cause})")
        if isinstance(exc, openai.APIStatusError):
            status = int(exc.status_code)
            message = scrub(_status_message(exc))[:500]
            text = f"{where}: HTTP {status}: {message}"
            if status in _TRANSIENT_STATUSES or status >= 500:
                if status >= 500:
                    self._mark_unhealthy(endpoint)
                return TransientBackendError(
                    text,
                    retry_after=parse_retry_after(dict(exc.response.headers)),
                    rate_limited=status == 429,
                )
            if status in (401, 403):
                text += f" (check the key in ${self.api_key_env})" if self.api_key_env else ""
            return BackendError(text)
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            return TransientBackendError(f"{where}: unreadable response ({type(exc).__name__})")
        return BackendError(f"{where}: {type(exc).__name__}: {scrub(str(exc))[:500]}")

    async def _create(self, endpoint: _Endpoint, **params: Any) -> dict[str, Any]:
        """One chat-completion request: the reply's JSON; SDK errors converted, key-free.

        Sent with the SDK's generic ``client.post`` (its auth, URLs, timeouts and error
        types) and decoded with ``json``: turning plain-JSON parameters into typed ones
        and the reply into the SDK's models cost more CPU than the rest of a request
        together, which is what limits a local server's throughput.
        ``extra_body`` fields win over the backend's own, as in the SDK.
        """
        client = self._client(endpoint)
        body = {"model": self.model, **params, **self.extra_body}
        try:
            content = await client.post(
                "/chat/completions", body=body, cast_to=bytes, options=self._auth_options()
            )
            data = json.loads(content)
            if not isinstance(data, dict):
                raise ValueError("reply is not a JSON object")
            return data
        except (self._openai.OpenAIError, ValueError) as exc:
            converted = self._convert(exc, endpoint)
        # Raised outside the except block, without the SDK exception as context: that
        # one carries the request, whose headers hold the key.
        raise converted

    def _token_params(self, max_tokens: int) -> dict[str, int]:
        if self._reasoning:
            return {"max_completion_tokens": self.reasoning_max_tokens}
        return {self.token_parameter: max_tokens}

    def _switch_to_reasoning(self, why: str) -> None:
        if not self._reasoning:
            logger.warning(
                "model %r %s; switching to the reasoning protocol: max_completion_tokens=%d, "
                "the rating is parsed from the final answer (recorded as %r)",
                self.model,
                why,
                self.reasoning_max_tokens,
                PROTOCOL_REASONING,
            )
        self._reasoning = True

    # --- Backend API ----------------------------------------------------------------------

    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        """Sample ``n`` completions of one prompt in one request (see the module docstring).

        Returns fewer than ``n`` texts when the endpoint ignores ``n``.

        Raises:
            TransientBackendError: Rate limit, server error, timeout, connection error.
            BackendError: Any other rejected request.
        """
        if len(prompts) != 1:
            raise ValueError(f"prompts: the openai backend takes one prompt, got {len(prompts)}")
        if n < 1:
            raise ValueError(f"n: must be >= 1, got {n}")
        endpoint = self._pick()
        messages = _messages(prompts[0])
        for _ in range(4):  # each switch (n, token parameter, thinking) happens once
            ask = n if endpoint.honours_n is not False else 1
            params: dict[str, Any] = {
                "messages": messages,
                "temperature": temperature,
                **self._token_params(max_tokens),
            }
            if ask > 1:
                params["n"] = ask
            if seed is not None:
                params["seed"] = seed
            try:
                completion = await self._create(endpoint, **params)
            except BackendError as exc:
                if isinstance(exc, TransientBackendError) or "HTTP 400" not in str(exc):
                    raise
                text = str(exc)
                if ask > 1 and _names_parameter(text, "n"):
                    self._note_n(endpoint, False, f"rejected n={ask}")
                    continue
                if not self._reasoning and _names_parameter(text, self.token_parameter):
                    self._switch_to_reasoning(f"rejects {self.token_parameter}")
                    continue
                raise
            if not self._reasoning and _is_thinking(completion):
                self._switch_to_reasoning(
                    f"spent its {max_tokens}-token budget reasoning before answering"
                )
                continue
            break
        else:  # pragma: no cover - each switch happens once, so the loop ends earlier
            raise BackendError(f"{endpoint.label}: could not agree on a request protocol")
        texts = tuple(_content(c) for c in _choices(completion))
        if ask > 1:
            if len(texts) < ask:
                self._note_n(endpoint, False, f"returned {len(texts)} of {ask} choices")
            else:
                self._note_n(endpoint, True, "")
        self.protocols_used.add(self.protocol)
        return [Generation(texts[:n], _usage(completion))]

    def _note_n(self, endpoint: _Endpoint, honours: bool, why: str) -> None:
        if not honours and endpoint.honours_n is not False:
            logger.warning(
                "%s %s: it ignores n; asking it for one completion per request from now on",
                endpoint.label,
                why,
            )
        if endpoint.honours_n is not False:
            endpoint.honours_n = honours

    async def distributions(
        self,
        prompts: Sequence[Prompt],
        *,
        scale: Sequence[int],
        temperature: float,
    ) -> list[ScaleDistribution]:
        """Probability of each scale value from first-token logprobs (one request per prompt).

        ``raw`` holds the protocol, the request temperature, the top logprobs as
        ``[token, logprob]`` pairs, the sampled token, the missing values and the policy.

        Raises:
            TransientBackendError: As for :meth:`generate`.
            BackendError: The model returns no logprobs or reasons before answering.
        """
        if len(prompts) != 1:
            raise ValueError(f"prompts: the openai backend takes one prompt, got {len(prompts)}")
        if self._reasoning:
            raise BackendError(_NO_LOGPROBS.format(model=self.model, why="is a reasoning model"))
        endpoint = self._pick()
        try:
            completion = await self._create(
                endpoint,
                messages=_messages(prompts[0]),
                temperature=LOGPROB_TEMPERATURE,
                logprobs=True,
                top_logprobs=self.top_logprobs,
                **{self.token_parameter: 1},
            )
        except BackendError as exc:
            text = str(exc)
            rejected = _names_parameter(text, "logprobs") or _names_parameter(
                text, self.token_parameter
            )
            if not isinstance(exc, TransientBackendError) and "HTTP 400" in text and rejected:
                raise BackendError(
                    _NO_LOGPROBS.format(model=self.model, why="rejects logprob requests")
                    + f" ({text})"
                ) from None
            raise
        if _is_thinking(completion):
            raise BackendError(
                _NO_LOGPROBS.format(model=self.model, why="reasons before its first answer token")
            )
        choices = _choices(completion)
        logprobs = choices[0].get("logprobs") if choices else None
        content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
        if not content or not isinstance(content, list) or not isinstance(content[0], Mapping):
            raise BackendError(
                f"{endpoint.label}: no logprobs in the reply of model {self.model!r}; "
                "the server may not support logprobs (use sampling mode)"
            )
        first = content[0]
        try:
            pairs = [
                (str(t["token"]), float(t["logprob"])) for t in (first.get("top_logprobs") or [])
            ]
            if not pairs:
                pairs = [(str(first["token"]), float(first["logprob"]))]
            dist = scale_probabilities(
                pairs, scale, temperature=temperature, missing=self.missing_logprob
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientBackendError(
                f"{endpoint.label}: malformed logprobs in the reply ({exc})"
            ) from None
        self.protocols_used.add(PROTOCOL_LOGPROBS)
        return [
            dist.scale_distribution(
                top_logprobs=pairs,
                sampled=first.get("token"),
                scale=scale,
                missing_policy=self.missing_logprob,
                usage=_usage(completion),
            )
        ]

    async def aclose(self) -> None:
        """Close every endpoint's connection pool (a later request opens a new one)."""
        for endpoint in self._endpoints:
            client, endpoint.client = endpoint.client, None
            if client is not None:
                await client.close()


_NO_LOGPROBS = (
    "model {model!r} {why}: exact (logprob) mode needs the rating as the first answer "
    "token; use mode 'sampling', or switch reasoning off (e.g. extra_body "
    '{{"chat_template_kwargs": {{"enable_thinking": false}}}} on vLLM)'
)


def _problem(exc: BaseException) -> str:
    """One line for a preflight problem (the message is already free of secrets)."""
    return " ".join(str(exc).split())


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in prompt.messages]


def _choices(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    choices = data.get("choices")
    if not isinstance(choices, list):
        return []
    return [c for c in choices if isinstance(c, Mapping)]


def _content(choice: Mapping[str, Any]) -> str:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return content if isinstance(content, str) else ""


def _int(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except OverflowError:  # JSON 1e999 reads as infinity; the engine clamps and warns
        return sys.maxsize if value > 0 else 0
    except (TypeError, ValueError):
        return 0


def _usage(data: Mapping[str, Any]) -> Usage:
    usage = data.get("usage")
    if not isinstance(usage, Mapping):
        return Usage()
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return Usage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        cached_tokens=_int(cached),
    )


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        message = body.get("message") or body.get("detail")
        if message:
            return str(message)
    return str(getattr(exc, "message", "") or type(exc).__name__)


def _names_parameter(message: str, name: str) -> bool:
    """Whether an error message is about request parameter ``name``."""
    quoted = re.search(rf"['\"`]{re.escape(name)}['\"`]", message)
    plain = re.search(rf"\b(parameter|param|field|argument)\s+{re.escape(name)}\b", message)
    return bool(quoted or plain or re.search(rf"\b{re.escape(name)}\s+must\b", message))


def _is_thinking(data: Mapping[str, Any]) -> bool:
    """Whether a reply ran out of tokens while reasoning, before any answer text."""
    choices = _choices(data)
    if not choices:
        return False
    for choice in choices:
        if _content(choice).strip() or choice.get("finish_reason") != "length":
            return False
    usage = data.get("usage")
    details = usage.get("completion_tokens_details") if isinstance(usage, Mapping) else None
    if isinstance(details, Mapping) and _int(details.get("reasoning_tokens")) > 0:
        return True
    message = choices[0].get("message")
    return isinstance(message, Mapping) and bool(
        message.get("reasoning_content") or message.get("reasoning")
    )


__all__ = [
    "LOGPROB_TEMPERATURE",
    "PROTOCOL_LOGPROBS",
    "PROTOCOL_REASONING",
    "PROTOCOL_SHORT",
    "LogprobDistribution",
    "OpenAIBackend",
    "parse_retry_after",
    "public_url",
    "scale_probabilities",
    "scale_value_of",
]
