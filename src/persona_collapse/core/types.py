"""Value types that cross every layer: chat messages, prompts, completions, usage.

They are plain frozen dataclasses with no behaviour beyond small conveniences, so
prompts, stores, the engine and backends can share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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


RunMode = Literal["sampling", "exact"]
"""How ratings are collected: ``sampling`` (repeated replies) or ``exact`` (first-token
probabilities of the scale values; ``logprobs`` is its deprecated name in config files)."""

RUN_MODES: tuple[str, ...] = ("sampling", "exact")
"""The values of :data:`RunMode`."""

Role = Literal["system", "user", "assistant"]


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
        control: For a control-task prompt, ``(task, item id, gold answer)``. Real
            backends ignore it, as they ignore ``persona``; the simulator answers
            control items from it (its model needs the right answer to be right).
    """

    messages: tuple[Message, ...]
    persona: str | None = None
    item_id: int | None = None
    control: tuple[str, int, str] | None = None

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

    def clamped(self, limit: int) -> Usage:
        """Each count limited to ``[0, limit]`` (a server may report nonsense)."""
        return Usage(*(min(max(int(v), 0), limit) for v in self.counts))

    @property
    def counts(self) -> tuple[int, int, int]:
        """``(prompt_tokens, completion_tokens, cached_tokens)``."""
        return (self.prompt_tokens, self.completion_tokens, self.cached_tokens)

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


__all__ = [
    "MIN_SCALE_MASS",
    "RUN_MODES",
    "SCALE_MASS_TEMPERATURE",
    "Generation",
    "Message",
    "Prompt",
    "Role",
    "RunMode",
    "ScaleDistribution",
    "Usage",
]
