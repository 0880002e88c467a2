"""The backend protocol: one required async method, optional hooks with defaults.

A backend only turns prompts into completions (and, optionally, exact rating
distributions). Concurrency limits, retries, attempt bookkeeping and storage
live once, in :mod:`persona_collapse.engine.collect`, never in a backend.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from persona_collapse.core.types import (
    MIN_SCALE_MASS,
    SCALE_MASS_TEMPERATURE,
    Generation,
    Message,
    Prompt,
    Role,
    RunMode,
    ScaleDistribution,
    Usage,
)

ProbeMode = RunMode


@dataclass(frozen=True)
class EndpointBehaviour:
    """What a preflight learned about one endpoint serving one model.

    Attributes:
        endpoint: The endpoint (URL without credentials, or a backend label).
        model: The model asked.
        problems: Why a run cannot start (unreachable, 401, unknown model, no logprobs
            in exact mode): each one line, naming the fix where there is one.
        warnings: What would make results misleading (say, a server that ignores
            temperature), one line each.
        honours_n: Whether one request returns ``n`` choices (None: not checked).
        logprobs: Whether replies carry logprobs (None: not checked).
        varies_with_temperature: Whether identical requests at temperature 1 differ
            (None: not checked).
        unparseable_share: Share of the probe replies that do not start with a rating
            (each such reply is asked again in a run; None: not checked).
    """

    endpoint: str
    model: str
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    honours_n: bool | None = None
    logprobs: bool | None = None
    varies_with_temperature: bool | None = None
    unparseable_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (for run metadata)."""
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "honours_n": self.honours_n,
            "logprobs": self.logprobs,
            "varies_with_temperature": self.varies_with_temperature,
            "unparseable_share": self.unparseable_share,
        }


class Backend(ABC):
    """A model that answers prompts.

    Subclasses implement :meth:`generate`; everything else has a default.
    Register a subclass with :func:`persona_collapse.backends.register_backend`.
    """

    name: ClassVar[str] = "backend"
    #: Cells of exact runs with less on-scale mass are counted and warned about.
    min_scale_mass: float = MIN_SCALE_MASS
    #: How many prompts the engine may pass to one :meth:`generate` call.
    max_batch_size: ClassVar[int] = 1
    #: Keyword option naming the model (the simulator's is its ``preset``).
    model_option: ClassVar[str] = "model"
    #: Whether the backend talks to a server (takes ``base_url`` and ``api_key_env``).
    uses_endpoint: ClassVar[bool] = False
    #: Variable holding the API key when a spec names none (None: no key by default).
    default_api_key_env: ClassVar[str | None] = None
    #: Settings of a run or study the backend wants passed in when offered
    #: (e.g. the simulator's ``instrument`` and ``template``).
    context_options: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        """Sample ``n`` completions for each prompt.

        Args:
            prompts: Batch of prompts (at most ``max_batch_size``).
            n: Completions wanted per prompt (``>= 1``).
            temperature: Sampling temperature (``>= 0``).
            max_tokens: Completion length limit in tokens.
            seed: Request seed derived by the engine from the run seed and the
                slot; backends that can honour it should, so resumed runs repeat.

        Returns:
            One :class:`Generation` per prompt, in order.

        Raises:
            TransientBackendError: A failure worth retrying.
            BackendError: A failure that retrying will not fix.
        """

    @property
    def supports_distributions(self) -> bool:
        """Whether :meth:`distributions` is implemented."""
        return type(self).distributions is not Backend.distributions

    async def distributions(
        self,
        prompts: Sequence[Prompt],
        *,
        scale: Sequence[int],
        temperature: float,
    ) -> list[ScaleDistribution]:
        """Exact probability of each scale value as the first answer token.

        Optional hook; the default raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"backend {self.name!r} cannot return rating distributions")

    def preflight_key(self) -> str:
        """What makes two backends the same endpoint and model (checked once)."""
        return json.dumps(self.describe(), sort_keys=True, default=str)

    async def preflight(
        self, prompt: Prompt, *, mode: ProbeMode, scale: Sequence[int]
    ) -> list[EndpointBehaviour]:
        """Check, before any answer is collected, that this backend can serve a run.

        Optional hook (default: nothing to check, e.g. the simulator or a local
        model). A backend that talks to a server asks it once (per endpoint) with the
        run's first ``prompt`` and reports what it found; it never raises for a
        problem of the endpoint, it reports it. Requests made here are not stored.
        """
        return []

    def run_metadata(self) -> dict[str, Any]:
        """What the backend learned while serving a run, stored with the run.

        For example the request protocols it used (``"protocols"``: a list) or which
        endpoints support ``n``. Default: nothing. Must never contain secrets.
        """
        return {}

    def describe(self) -> dict[str, Any]:
        """Settings that identify this backend in a run key. Must never contain secrets."""
        return {"backend": self.name}

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections or models. Default: nothing to release."""


__all__ = [
    "MIN_SCALE_MASS",
    "SCALE_MASS_TEMPERATURE",
    "Backend",
    "EndpointBehaviour",
    "Generation",
    "Message",
    "ProbeMode",
    "Prompt",
    "Role",
    "ScaleDistribution",
    "Usage",
]
