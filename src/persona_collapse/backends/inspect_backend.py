"""Backend ``"inspect"``: any inspect_ai model provider (``PROVIDER/MODEL``) through our engine.

inspect_ai (UK AISI) reaches Anthropic, Google, Mistral, Bedrock, Azure, Together,
Groq, vLLM, Ollama, llama.cpp and more through one ``ModelAPI``; this backend asks
such a model for completions, while persona-collapse keeps its own resumable store,
pacing and retries. Install with ``pip install 'persona-collapse[inspect]'``;
inspect_ai is imported only when the backend is built.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from persona_collapse.backends.base import (
    Backend,
    EndpointBehaviour,
    Generation,
    ProbeMode,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.backends.openai_compat import (
    LOGPROB_TEMPERATURE,
    MissingPolicy,
    public_url,
    scale_probabilities,
)
from persona_collapse.core.errors import (
    BackendError,
    ConfigError,
    MissingDependencyError,
    TransientBackendError,
)
from persona_collapse.core.secrets import read_key, scrub

logger = logging.getLogger(__name__)

PROTOCOL_CHOICES = "inspect-num-choices"
"""Sampling requests that asked for all missing repetitions with ``num_choices``."""
PROTOCOL_SINGLE = "inspect-one-per-sample"
"""Sampling requests of one completion each (providers without ``num_choices``)."""
PROTOCOL_LOGPROBS = "logprobs"
"""Exact mode: first-token logprobs (as in the openai backend)."""

_SEED_MODULUS = 2**31 - 1


def _import_inspect() -> Any:
    try:
        import inspect_ai.model as inspect_model
    except ImportError:
        raise MissingDependencyError("inspect_ai", "inspect") from None
    return inspect_model


class InspectBackend(Backend):
    """Backend ``"inspect"``: an inspect_ai model ``PROVIDER/MODEL``.

    Which layer does what:

    * **our engine** (:mod:`persona_collapse.engine.collect`): concurrency (its
      adaptive limit and rate caps), retries with backoff, the resumable store and
      the short-answer retry protocol. This backend turns every provider failure
      into :class:`TransientBackendError` (what inspect's own classifier,
      ``ModelAPI.should_retry``, calls retryable: rate limits, with the server's
      ``retry_after``, timeouts, 5xx) or :class:`BackendError` (anything else), and
      the engine decides whether to ask again.
    * **inspect_ai**: the provider client, request format and authentication only.
      Its retries are off (``max_retries=0``: one attempt per request), its
      per-attempt timeout is ``timeout`` and its connection limit
      (``max_connections``, static, not adaptive) is set high enough never to hold
      back a request the engine has already admitted.

    Sampling asks for all missing repetitions of a cell in one request with
    ``num_choices``; a provider that returns fewer choices than asked (most do not
    support it) is remembered, and from then on each sample is a request of its own
    (seeds ``seed + j``). Exact mode asks for first-token logprobs
    (``max_tokens=1``, ``logprobs``, ``top_logprobs``) at temperature 1 and maps
    them to scale values as the openai backend does; a provider that returns no
    logprobs is a clear error. Token usage (input, output, cache reads) is
    reported per request.

    Args:
        model: ``PROVIDER/MODEL`` as inspect names it (``anthropic/claude-…``,
            ``openai/gpt-4o-mini``, ``vllm/…``, ``mockllm/model``).
        base_url: Provider URL, where the provider takes one (None: its default).
        api_key_env: Environment variable holding the key; None lets the provider
            read its own variable (``ANTHROPIC_API_KEY``...). Never stored.
        model_args: Extra keyword arguments of ``inspect_ai.model.get_model``
            (provider-specific; tests pass ``custom_outputs`` to ``mockllm``).
        timeout: Seconds one attempt may take (then the engine retries).
        max_connections: Connection limit handed to inspect (>= the engine's concurrency).
        num_choices: True/False to assume the provider does/does not honour
            ``num_choices``; None to find out from the first reply.
        top_logprobs: Exact mode: top logprobs asked for (1-20).
        missing_logprob: Exact mode: ``"floor"`` or ``"zero"`` for absent scale values.
        min_scale_mass: Exact mode: cells with less on-scale mass are counted (0-1).

    Raises:
        MissingDependencyError: inspect_ai is not installed.
        ConfigError: An invalid option, or ``api_key_env`` names an unset variable.
    """

    name = "inspect"
    uses_endpoint = True
    default_api_key_env = None
    context_options = frozenset({"min_scale_mass"})
    max_batch_size = 1

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        model_args: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        max_connections: int = 1024,
        num_choices: bool | None = None,
        top_logprobs: int = 20,
        missing_logprob: MissingPolicy = "floor",
        min_scale_mass: float = 0.5,
    ) -> None:
        if not isinstance(model, str) or "/" not in model.strip("/"):
            raise ConfigError(
                f"inspect backend: model must be PROVIDER/MODEL (e.g. anthropic/claude-…, "
                f"mockllm/model), got {model!r}"
            )
        if base_url is not None and not isinstance(base_url, str):
            raise ConfigError("inspect backend: base_url must be one URL")
        if model_args is not None and not isinstance(model_args, Mapping):
            raise ConfigError("inspect backend: model_args must be a mapping")
        if not (math.isfinite(float(timeout)) and float(timeout) >= 1):
            raise ConfigError(f"inspect backend: timeout must be >= 1 second, got {timeout!r}")
        if not (isinstance(max_connections, int) and max_connections >= 1):
            raise ConfigError(
                f"inspect backend: max_connections must be an integer >= 1, got {max_connections!r}"
            )
        if num_choices not in (None, True, False):
            raise ConfigError("inspect backend: num_choices must be true, false or null")
        if not (isinstance(top_logprobs, int) and 1 <= top_logprobs <= 20):
            raise ConfigError(f"inspect backend: top_logprobs must be 1-20, got {top_logprobs!r}")
        if missing_logprob not in ("floor", "zero"):
            raise ConfigError(
                "inspect backend: missing_logprob must be 'floor' or 'zero', "
                f"got {missing_logprob!r}"
            )
        if not (0.0 <= float(min_scale_mass) <= 1.0):
            raise ConfigError(
                f"inspect backend: min_scale_mass must be 0-1, got {min_scale_mass!r}"
            )
        if api_key_env is not None and not read_key(api_key_env):
            raise ConfigError(
                f"inspect backend: environment variable {api_key_env} is not set; export the "
                "API key there (or leave api_key_env out: the provider reads its own variable)"
            )
        self._inspect = _import_inspect()
        self.model = model.strip()
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.model_args: dict[str, Any] = dict(model_args or {})
        self.timeout = float(timeout)
        self.max_connections = max_connections
        self.honours_choices: bool | None = num_choices
        self.top_logprobs = top_logprobs
        self.missing_logprob: MissingPolicy = missing_logprob
        self.min_scale_mass = float(min_scale_mass)
        self.protocols_used: set[str] = set()
        self._model: Any = None

    # --- identity -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Model and logprob settings (no key, no URL, no provider arguments)."""
        return {
            "backend": self.name,
            "model": self.model,
            "missing_logprob": self.missing_logprob,
            "top_logprobs": self.top_logprobs,
        }

    def run_metadata(self) -> dict[str, Any]:
        """Protocols used, whether the provider honours ``num_choices``, inspect's version
        and the provider URL (without credentials)."""
        import inspect_ai

        return {
            "protocols": sorted(self.protocols_used),
            "honours_num_choices": self.honours_choices,
            "inspect_ai": str(getattr(inspect_ai, "__version__", "")),
            "base_url": public_url(self.base_url) if self.base_url else None,
        }

    # --- plumbing -------------------------------------------------------------------------

    def _get_model(self) -> Any:
        if self._model is None:
            im = self._inspect
            key = read_key(self.api_key_env) if self.api_key_env else None
            config = im.GenerateConfig(
                max_retries=0,
                attempt_timeout=max(math.ceil(self.timeout), 1),
                max_connections=self.max_connections,
            )
            try:
                self._model = im.get_model(
                    self.model,
                    config=config,
                    base_url=self.base_url,
                    api_key=key or None,
                    memoize=False,
                    **self.model_args,
                )
            except Exception as exc:  # provider constructors raise anything
                message = scrub(str(exc))[:500]
                raise BackendError(
                    f"inspect model {self.model!r}: {type(exc).__name__}: {message}"
                ) from None
        return self._model

    def _messages(self, prompt: Prompt) -> list[Any]:
        im = self._inspect
        kinds = {
            "system": im.ChatMessageSystem,
            "user": im.ChatMessageUser,
            "assistant": im.ChatMessageAssistant,
        }
        return [kinds[m.role](content=m.content) for m in prompt.messages]

    def _convert(self, exc: BaseException) -> BackendError:
        """Our error type for what inspect raised (message scrubbed of secrets).

        With ``max_retries=0`` inspect raises a retryable failure wrapped in tenacity's
        ``RetryError`` and anything else as it is; the provider's own classifier
        (``ModelAPI.should_retry``) says whether it was a rate limit and what the
        server asked to wait.
        """
        import tenacity

        inner: BaseException = exc
        wrapped = False
        if isinstance(exc, tenacity.RetryError):
            inner, wrapped = exc.last_attempt.exception() or exc, True
        if isinstance(inner, TimeoutError) or type(inner).__name__ in (
            "AttemptTimeoutError",
            "StreamIdleTimeoutError",
        ):
            return TransientBackendError(
                f"inspect model {self.model!r}: no response within {self.timeout:g} s"
            )
        decision: Any = False
        if self._model is not None and isinstance(inner, Exception):
            try:
                decision = self._model.api.should_retry(inner)
            except Exception:  # a classifier that fails classifies nothing
                decision = False
        text = f"inspect model {self.model!r}: {type(inner).__name__}: {scrub(str(inner))[:500]}"
        if wrapped or decision:
            return TransientBackendError(
                text,
                retry_after=getattr(decision, "retry_after", None),
                rate_limited=getattr(decision, "kind", None) == "rate_limit",
            )
        return BackendError(text)

    async def _call(self, prompt: Prompt, **settings: Any) -> Any:
        """One inspect ``generate`` call; failures converted, raised without chained context."""
        model = self._get_model()
        config = self._inspect.GenerateConfig(
            max_retries=0,
            attempt_timeout=max(math.ceil(self.timeout), 1),
            max_connections=self.max_connections,
            **settings,
        )
        try:
            return await model.generate(self._messages(prompt), config=config)
        except Exception as exc:
            converted = self._convert(exc)
        # Raised outside the except block: the provider's exception may carry the request.
        raise converted

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
        """Sample ``n`` completions of one prompt (see the class docstring).

        Raises:
            TransientBackendError: What inspect's provider calls retryable.
            BackendError: Any other failure.
        """
        if len(prompts) != 1:
            raise ValueError(f"prompts: the inspect backend takes one prompt, got {len(prompts)}")
        if n < 1:
            raise ValueError(f"n: must be >= 1, got {n}")
        prompt = prompts[0]
        settings = {"temperature": temperature, "max_tokens": max_tokens}
        texts: list[str] = []
        usage = Usage()
        if n > 1 and self.honours_choices is not False:
            output = await self._call(prompt, num_choices=n, seed=seed, **settings)
            texts = [_text(c) for c in output.choices][:n]
            usage = _usage(output)
            if len(texts) > 1:
                self.protocols_used.add(PROTOCOL_CHOICES)
            if len(texts) < n and self.honours_choices is None:
                logger.info(
                    "inspect model %r returned %d of %d choices: asking for one sample per "
                    "request from now on",
                    self.model,
                    len(texts),
                    n,
                )
            self.honours_choices = len(texts) >= n
        missing = n - len(texts)
        if missing > 0:
            first = len(texts)
            outputs = await asyncio.gather(
                *(
                    self._call(
                        prompt,
                        seed=None if seed is None else (seed + first + j) % _SEED_MODULUS,
                        **settings,
                    )
                    for j in range(missing)
                )
            )
            for output in outputs:
                texts.extend(_text(c) for c in output.choices[:1])
                usage = usage + _usage(output)
            if n > 1 or self.honours_choices is not True:
                self.protocols_used.add(PROTOCOL_SINGLE)
        return [Generation(tuple(texts), usage)]

    async def distributions(
        self,
        prompts: Sequence[Prompt],
        *,
        scale: Sequence[int],
        temperature: float,
    ) -> list[ScaleDistribution]:
        """Probability of each scale value from first-token logprobs (one request per prompt).

        Raises:
            BackendError: The provider returns no logprobs (exact mode is then impossible).
        """
        if len(prompts) != 1:
            raise ValueError(f"prompts: the inspect backend takes one prompt, got {len(prompts)}")
        output = await self._call(
            prompts[0],
            temperature=LOGPROB_TEMPERATURE,
            max_tokens=1,
            logprobs=True,
            top_logprobs=self.top_logprobs,
        )
        choice = output.choices[0] if output.choices else None
        content = choice.logprobs.content if choice is not None and choice.logprobs else None
        if not content:
            raise BackendError(
                f"inspect model {self.model!r} returned no logprobs: exact (logprob) mode "
                "needs a provider that returns them (openai, grok, together, vllm, hf, "
                "llama-cpp-python...); use mode 'sampling' for this model"
            )
        first = content[0]
        pairs = [(str(t.token), float(t.logprob)) for t in (first.top_logprobs or [])]
        if not pairs:
            pairs = [(str(first.token), float(first.logprob))]
        try:
            dist = scale_probabilities(
                pairs, scale, temperature=temperature, missing=self.missing_logprob
            )
        except ValueError as exc:
            raise TransientBackendError(
                f"inspect model {self.model!r}: malformed logprobs ({exc})"
            ) from None
        self.protocols_used.add(PROTOCOL_LOGPROBS)
        return [
            dist.scale_distribution(
                top_logprobs=pairs,
                sampled=first.token,
                scale=scale,
                missing_policy=self.missing_logprob,
                usage=_usage(output),
            )
        ]

    async def preflight(
        self, prompt: Prompt, *, mode: ProbeMode, scale: Sequence[int]
    ) -> list[EndpointBehaviour]:
        """Ask the model once: reachable, and (exact mode) whether it returns logprobs."""
        label = f"inspect:{self.model}"
        try:
            if mode == "exact":
                await self.distributions([prompt], scale=scale, temperature=1.0)
                return [EndpointBehaviour(label, self.model, logprobs=True)]
            await self.generate([prompt], n=2, temperature=1.0, max_tokens=8, seed=1)
        except BackendError as exc:
            line = " ".join(str(exc).split())
            if isinstance(exc, TransientBackendError):
                return [EndpointBehaviour(label, self.model, warnings=(line,))]
            return [EndpointBehaviour(label, self.model, problems=(line,))]
        finally:
            # The provider client belongs to this event loop; the run makes a new one.
            await self.aclose()
        return [EndpointBehaviour(label, self.model, honours_n=self.honours_choices)]

    async def aclose(self) -> None:
        """Close the provider client (a later request opens a new one)."""
        model, self._model = self._model, None
        if model is not None:
            await model.api.aclose()


def _text(choice: Any) -> str:
    text = choice.message.text
    return text if isinstance(text, str) else ""


def _usage(output: Any) -> Usage:
    usage = output.usage
    if usage is None:
        return Usage()
    return Usage(
        prompt_tokens=max(int(usage.input_tokens or 0), 0),
        completion_tokens=max(int(usage.output_tokens or 0), 0),
        cached_tokens=max(int(usage.input_tokens_cache_read or 0), 0),
    )


__all__ = ["PROTOCOL_CHOICES", "PROTOCOL_SINGLE", "InspectBackend"]
