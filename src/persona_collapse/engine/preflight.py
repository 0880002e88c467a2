"""Preflight: ask every distinct endpoint and model once before any answer is collected.

``run`` and ``study run`` call :func:`run_preflight` with every backend they are
about to use. Each distinct backend (:meth:`Backend.preflight_key`: kind, URLs and
model) runs its :meth:`Backend.preflight` hook once. Problems (an unreachable URL, a
refused key, an unknown model, no logprobs in exact mode) stop the command with one
line each, before a store is created or a paid request is made for answers;
warnings (a server that ignores ``n`` or temperature) are logged once and recorded
in the run metadata by the backend.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from persona_collapse.backends.base import Backend, EndpointBehaviour, ProbeMode, Prompt
from persona_collapse.core.errors import BackendError, UserError
from persona_collapse.core.instrument import Instrument
from persona_collapse.core.prompts import PromptTemplate, render_prompt
from persona_collapse.engine.costs import EndpointSupport

logger = logging.getLogger(__name__)


class PreflightError(UserError):
    """An endpoint cannot serve the run (one line per problem; exit status 2)."""

    def __init__(self, problems: Sequence[str]) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"preflight: {len(problems)} problem(s), nothing was collected "
            f"(skip the check with --no-preflight):\n{lines}"
        )
        self.problems = tuple(problems)


@dataclass(frozen=True)
class PreflightCheck:
    """One backend to check, with the run's first prompt.

    Attributes:
        label: Who uses it (a run or variant name), shown with each problem.
        backend: The backend.
        prompt: A prompt of the run (the probes ask it).
        mode: ``"sampling"`` or ``"exact"`` (logprobs).
        scale: The instrument's scale values.
    """

    label: str
    backend: Backend
    prompt: Prompt
    mode: ProbeMode
    scale: tuple[int, ...]


def make_check(
    label: str,
    backend: Backend,
    instrument: Instrument,
    template: PromptTemplate,
    personas: Sequence[str] | None,
    mode: ProbeMode,
) -> PreflightCheck:
    """The check of a run: its first item, asked of its first persona (or of the model)."""
    item = instrument.active_items[0].id
    prompt = render_prompt(template, instrument, item, personas[0] if personas else None)
    return PreflightCheck(label, backend, prompt, mode, tuple(instrument.scale))


@contextmanager
def discard_if_empty(path: Path, *, new: bool) -> Iterator[None]:
    """Remove the store at ``path`` again if this command created it and a backend
    failure left no answer in it (a failed start leaves nothing behind)."""
    try:
        yield
    except BackendError:
        if new and path.is_file() and _holds_nothing(path):
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            logger.info("%s: removed again, nothing was stored in it", path)
        raise


def _holds_nothing(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            # Failed attempts alone are not answers: a store holding only them goes.
            return all(
                conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
                for table in ("ratings", "distributions")
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def endpoint_support(behaviours: Sequence[EndpointBehaviour]) -> EndpointSupport:
    """What a forecast should assume of the endpoints a preflight checked: ``n`` is
    honoured only if every endpoint honours it; the largest unparseable share."""
    shares = [b.unparseable_share for b in behaviours if b.unparseable_share is not None]
    return EndpointSupport(
        honours_n=all(b.honours_n is not False for b in behaviours),
        unparseable_share=max(shares, default=0.0),
    )


async def _check_all(checks: Sequence[PreflightCheck]) -> list[list[EndpointBehaviour]]:
    return list(
        await asyncio.gather(
            *(c.backend.preflight(c.prompt, mode=c.mode, scale=c.scale) for c in checks)
        )
    )


def run_preflight(checks: Sequence[PreflightCheck]) -> dict[str, list[EndpointBehaviour]]:
    """Run each distinct backend's preflight once (concurrently); raise on problems.

    Must be called outside an event loop (it runs its own).

    Returns:
        What each checked label's backend learned, by label.

    Raises:
        PreflightError: Any endpoint reported a problem (all are listed).
    """
    distinct: dict[str, PreflightCheck] = {}
    users: dict[str, list[str]] = {}
    for check in checks:
        key = f"{check.mode}|{check.backend.preflight_key()}"
        distinct.setdefault(key, check)
        users.setdefault(key, []).append(check.label)
    if not distinct:
        return {}
    results = asyncio.run(_check_all(list(distinct.values())))
    problems: list[str] = []
    learned: dict[str, list[EndpointBehaviour]] = {}
    for key, behaviours in zip(distinct, results, strict=True):
        who = ", ".join(users[key])
        for behaviour in behaviours:
            problems.extend(f"{who}: {p}" for p in behaviour.problems)
            for warning in behaviour.warnings:
                logger.warning("%s: %s", who, warning)
        for label in users[key]:
            learned[label] = behaviours
    if problems:
        raise PreflightError(problems)
    return learned


__all__ = [
    "PreflightCheck",
    "PreflightError",
    "discard_if_empty",
    "endpoint_support",
    "make_check",
    "run_preflight",
]
