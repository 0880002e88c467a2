"""The backend protocol: one required async method, optional hooks with defaults.

A backend only turns prompts into completions (and, optionally, exact rating
distributions). Concurrency limits, retries, attempt bookkeeping and storage
live once, in :mod:`persona_collapse.collect`, never in a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Role = Literal["system", "user", "assistant"]

SCALE_MASS_TEMPERATURE = 1.0
"""Temperature at which the on-scale mass is measured: the model's own distribution.

The **on-scale mass** of a cell is the probability, under the raw softmax
(``T = 1``) of the model's first answer token over its whole vocabulary, that
this token reads as a value of the rating scale (``"4"``, ``" 4"``, ``"▁4"``).
It does not depend on the run's sampling temperature; every backend that returns
distributions stores it in :attr:`ScaleDistribution.mass`.
"""

MIN_SCALE_MASS = 0.5
"""Cells whose on-scale mass is below this are counted and warned about by the engine."""


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    """A rendered chat prompt for one persona-item cell.

    Attributes:
        messages: The chat messages sent to the model.
        persona: Persona text, or None for a self run. Real backends ignore it;
            the simulator uses it (and infers it from ``messages`` when absent).
        item_id: Instrument item id the prompt asks about, or None if unknown.
    """

    messages: tuple[Message, ...]
    persona: str | None = None
    item_id: int | None = None

    @property
    def text(self) -> str:
        """All message contents joined by blank lines (for hashing and inference)."""
        return "\n\n".join(m.content for m in self.messages)


@dataclass(frozen=True)
class Usage:
    """Token accounting of one request (zeros where the backend does not report)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class Generation:
    """Completions returned for one prompt.

    ``texts`` may hold fewer than the ``n`` asked for (servers that ignore ``n``);
    the engine asks again for the rest.
    """

    texts: tuple[str, ...]
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ScaleDistribution:
    """Probability of each scale value for one prompt (exact or logprob mode).

    Attributes:
        probs: Probabilities of ``scale`` values, summing to 1 (renormalised).
        scale: The scale values, ascending.
        mass: On-scale mass of the cell: first-token probability of scale-value tokens
            at :data:`SCALE_MASS_TEMPERATURE` (T = 1), before renormalising, in [0, 1].
        raw: Backend-specific raw data (e.g. top logprobs), JSON-serialisable.
    """

    probs: tuple[float, ...]
    scale: tuple[int, ...]
    mass: float = 1.0
    raw: Mapping[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)


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
