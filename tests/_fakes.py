"""Shared test doubles: a scripted fake backend, a small instrument, persona texts.

Engine, pacing and protocol tests use these instead of their own copies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from persona_collapse.backends.base import (
    Backend,
    Generation,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.core.errors import TransientBackendError
from persona_collapse.core.instrument import Instrument, instrument_from_dict, mfq30

PERSONAS = ("A retired sailor.", "A young nurse.", "A chess teacher.", "A baker.")
"""Persona texts of the fake runs (tests take the first few)."""


def small_instrument(n_items: int = 3) -> Instrument:
    """MFQ-30 cut to its first ``n_items`` items (a fast run)."""
    data = mfq30().to_dict()
    data["name"] = f"mfq-{n_items}"
    data["items"] = data["items"][:n_items]
    return instrument_from_dict(data)


@dataclass(frozen=True)
class Call:
    persona: str | None
    item_id: int
    n: int
    max_tokens: int
    seed: int | None


Reply = Callable[[Call, int], Sequence[str]]
"""Texts for a call, given the call and its index among the calls for the same cell."""


class FakeBackend(Backend):
    """Answers with a script; records every call."""

    name = "fake"

    def __init__(
        self,
        reply: Reply,
        *,
        fail: Callable[[Call, int], BaseException | None] = (lambda call, index: None),
        delay: float = 0.0,
    ) -> None:
        self.reply = reply
        self.fail = fail
        self.delay = delay
        self.calls: list[Call] = []
        self.per_cell: dict[tuple[str | None, int], int] = {}
        self.closed = False

    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        assert len(prompts) == 1
        prompt = prompts[0]
        assert prompt.item_id is not None
        call = Call(prompt.persona, prompt.item_id, n, max_tokens, seed)
        self.calls.append(call)
        if self.delay:
            await asyncio.sleep(self.delay)
        error = self.fail(call, len(self.calls) - 1)
        if error is not None:
            raise error
        key = (prompt.persona, prompt.item_id)
        index = self.per_cell.get(key, 0)
        self.per_cell[key] = index + 1
        texts = tuple(self.reply(call, index))
        return [Generation(texts, Usage(prompt_tokens=10, completion_tokens=len(texts)))]

    def describe(self) -> dict[str, Any]:
        return {"backend": "fake"}

    async def aclose(self) -> None:
        self.closed = True


class DistributionBackend(FakeBackend):
    async def distributions(
        self, prompts: Sequence[Prompt], *, scale: Sequence[int], temperature: float
    ) -> list[ScaleDistribution]:
        item = prompts[0].item_id or 0
        probs = [0.0] * len(scale)
        probs[item % len(scale)] = 1.0
        return [ScaleDistribution(tuple(probs), tuple(scale), 0.9, {"item": item}, Usage(5, 1))]


def always(text: str) -> Reply:
    return lambda call, index: [text] * call.n


def rate_limit_error(retry_after: float | None = None) -> TransientBackendError:
    """A 429 as a backend raises it."""
    error = TransientBackendError("HTTP 429", retry_after=retry_after)
    error.rate_limited = True  # type: ignore[attr-defined]
    return error
