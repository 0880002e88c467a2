"""Collecting control tasks (capability items, lookup tables) through any backend.

The same pacing engine as persona runs (:class:`~persona_collapse.engine.pacing.Pacer`:
adaptive concurrency, rate caps, retries) sends the requests; the unit of work is an
item, whose missing repetitions are asked for in one request (``n`` = number missing)
with no persona, at the run's temperature. Every reply is stored with its parsed
answer, ``format_valid`` and ``correct`` as soon as its request returns (one store
transaction), so a killed run loses at most the requests in flight. A reply that does
not parse is stored as it is (answer ``""``, ``format_valid`` 0): the control
statistics count such failures rather than retrying them away.

Resume: the store's ``UNIQUE(run, item, repetition)`` keeps each slot once, and the
request seed derives from (run seed, item, first missing repetition), so a resumed run
asks exactly what an uninterrupted one would have asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from persona_collapse.backends.base import Backend
from persona_collapse.core.config import PacingSettings
from persona_collapse.core.controls import ControlTask, LookupTable
from persona_collapse.core.errors import BackendError
from persona_collapse.core.types import Generation, Message, Prompt, Usage
from persona_collapse.engine.collect import derive_seed
from persona_collapse.engine.pacing import Pacer
from persona_collapse.store.control_store import (
    ControlAnswer,
    ControlItemRecord,
    ControlRunRecord,
    ControlRunSpec,
    ControlStore,
)
from persona_collapse.store.sqlite import utc_now

logger = logging.getLogger(__name__)

MAX_TOKENS: dict[str, int] = {"mmlu": 64, "gsm8k": 512, "lookup": 32}
"""Reply budget per task: letters and ids come first; GSM8K answers are worked out."""

CONTROL_PERSONA_ID = -2
"""Persona slot of control requests in :func:`derive_seed` (no persona)."""


@dataclass(frozen=True)
class ControlSummary:
    """Outcome of a control collection session."""

    run: ControlRunRecord
    total: int
    stored: int
    added: int
    requests: int
    usage: Usage

    @property
    def complete(self) -> bool:
        """Every slot stored."""
        return self.stored >= self.total


def item_records(task: ControlTask) -> tuple[ControlItemRecord, ...]:
    """The store's item rows of a task (gold, subject; target and table for lookup)."""
    out: list[ControlItemRecord] = []
    for item_id in task.item_ids:
        item = task.item(item_id)
        if isinstance(item, LookupTable):
            out.append(
                ControlItemRecord(item_id, str(item.correct_id), "", item.target, item.table_json)
            )
        else:
            out.append(ControlItemRecord(item_id, item.gold, item.subject))
    return tuple(out)


def control_spec(
    task: ControlTask,
    backend: Backend,
    *,
    name: str,
    temperature: float,
    repetitions: int,
    seed: int,
    model: str | None = None,
) -> ControlRunSpec:
    """The run spec of ``task`` collected from ``backend``."""
    info = backend.describe()
    label = model or str(info.get("model") or info.get("preset") or backend.name)
    settings = {k: v for k, v in info.items() if k not in ("instrument", "instrument_hash")}
    return ControlRunSpec(
        name=name,
        task=task.name,
        model=label,
        backend=backend.name,
        backend_settings=settings,
        items=item_records(task),
        temperature=float(temperature),
        n_repetitions=int(repetitions),
        seed=int(seed),
    )


def _prompt(task: ControlTask, item_id: int) -> Prompt:
    return Prompt(
        (Message("user", task.prompt(item_id)),), control=(task.name, item_id, task.gold(item_id))
    )


async def collect_controls(
    store: ControlStore,
    task: ControlTask,
    backend: Backend,
    spec: ControlRunSpec,
    *,
    pacing: PacingSettings | None = None,
    on_request: Callable[[int], None] | None = None,
) -> ControlSummary:
    """Collect every missing (item, repetition) slot of a control run.

    Args:
        store: The control store.
        task: The task (items and scorer).
        backend: Any backend.
        spec: The run (see :func:`control_spec`); created in the store when new.
        pacing: Concurrency, rate caps and retries (defaults when None).
        on_request: Called with the number of rows added after each stored request.

    Raises:
        BackendError: A request failed after its retries (the run is marked failed;
            what was stored stays).
    """
    run = store.get_or_create_run(spec)
    n = run.n_repetitions
    done = store.completed_slots(run.run_id)
    total = len(task.item_ids) * n
    missing = {
        item_id: [r for r in range(1, n + 1) if (item_id, r) not in done]
        for item_id in task.item_ids
    }
    work = [(i, reps) for i, reps in missing.items() if reps]
    pacer = Pacer.from_settings(pacing)
    counters = {"added": 0, "requests": 0}
    usage_total = [Usage()]
    if work:  # a complete run stays as it is (no write: see RunStore.set_status)
        store.set_status(run.run_id, "running")
    prompts = {i: _prompt(task, i) for i, _ in work}

    async def one(item_id: int, reps: list[int]) -> int:
        prompt = prompts[item_id]
        seed = derive_seed(run.seed, CONTROL_PERSONA_ID, item_id, reps[0])
        max_tokens = MAX_TOKENS.get(task.name, 256)

        async def request() -> list[Generation]:
            return await backend.generate(
                [prompt], n=len(reps), temperature=run.temperature, max_tokens=max_tokens, seed=seed
            )

        generations = await pacer.call(request, tokens=len(prompt.text.split()) + max_tokens)
        if len(generations) != 1:
            raise BackendError(
                f"backend {backend.name!r} returned {len(generations)} generations for 1 prompt"
            )
        texts = list(generations[0].texts[: len(reps)])
        now = utc_now()
        rows: list[ControlAnswer] = []
        for rep, text in zip(reps, texts, strict=False):
            parsed = task.score(item_id, text)
            rows.append(
                ControlAnswer(
                    item_id, rep, text, parsed.answer, parsed.format_valid, parsed.correct, now
                )
            )
        added = store.record(run.run_id, rows, usage=generations[0].usage)
        counters["added"] += added
        counters["requests"] += 1
        usage_total[0] = usage_total[0] + generations[0].usage
        if on_request is not None:
            on_request(added)
        return len(rows)

    queue: asyncio.Queue[tuple[int, list[int]]] = asyncio.Queue()
    for entry in work:
        queue.put_nowait(entry)

    async def worker() -> None:
        while True:
            try:
                item_id, reps = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            # A backend returning fewer replies than asked: ask again for the rest.
            while reps:
                answered = await one(item_id, reps)
                # The slots were missing and only this worker asks this item, so the
                # first ``answered`` of them are now stored.
                reps = reps[answered:]
                if not answered:
                    raise BackendError(
                        f"backend {backend.name!r} returned no reply for item {item_id}"
                    )

    width = max(1, min(len(work), (pacing or PacingSettings()).max_concurrency))
    try:
        await asyncio.gather(*(worker() for _ in range(width)))
    except BaseException:
        store.set_status(run.run_id, "interrupted")
        raise
    stored = len(store.completed_slots(run.run_id))
    store.set_status(run.run_id, "complete" if stored >= total else "interrupted")
    return ControlSummary(
        run=store.find_run(run.name) or run,
        total=total,
        stored=stored,
        added=counters["added"],
        requests=counters["requests"],
        usage=usage_total[0],
    )


def run_control_collection(
    store: ControlStore,
    task: ControlTask,
    backend: Backend,
    spec: ControlRunSpec,
    *,
    pacing: PacingSettings | None = None,
    on_request: Callable[[int], None] | None = None,
) -> ControlSummary:
    """Synchronous :func:`collect_controls` (its own event loop)."""
    return asyncio.run(
        collect_controls(store, task, backend, spec, pacing=pacing, on_request=on_request)
    )


__all__ = [
    "CONTROL_PERSONA_ID",
    "MAX_TOKENS",
    "ControlSummary",
    "collect_controls",
    "control_spec",
    "item_records",
    "run_control_collection",
]
