"""Tests of the collection engine, on scripted fake backends and on the simulator."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from _fakes import PERSONAS as SHARED_PERSONAS
from _fakes import Call, DistributionBackend, FakeBackend, always, small_instrument
from persona_collapse.backends.base import (
    Backend,
    Generation,
    Prompt,
    ScaleDistribution,
    Usage,
)
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import PacingSettings, SamplingSettings
from persona_collapse.core.errors import BackendError, ConfigError, TransientBackendError
from persona_collapse.core.frames import INVALID_RATING, SELF_PERSONA_ID
from persona_collapse.core.instrument import Instrument, mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import (
    DEFAULT_TEMPLATE,
    LONG_MAX_TOKENS,
    MAX_SHORT_ATTEMPTS,
    SHORT_MAX_TOKENS,
    PromptTemplate,
)
from persona_collapse.engine.collect import (
    SEED_MODULUS,
    ProgressUpdate,
    RetryPolicy,
    Slot,
    collect,
    derive_seed,
    make_run_spec,
    plan_slots,
    run_collection,
)
from persona_collapse.engine.pacing import Pacer
from persona_collapse.store.sqlite import RunStore

PERSONAS = SHARED_PERSONAS[:2]
NO_WAIT = RetryPolicy(max_retries=3, initial_wait=0.0, max_wait=0.0, jitter=0.0)


def seeded_reply(call: Call, index: int) -> list[str]:
    """Deterministic in the request seed: a mix of ratings, junk and short replies.

    One cell never answers in one token, so it reaches the long-form request.
    """
    digest = hashlib.sha256(f"{call.seed}|{call.persona}|{call.item_id}".encode()).digest()
    texts = []
    for k in range(call.n):
        b = digest[k % len(digest)] ^ k
        stuck = call.item_id == 3 and call.persona == PERSONAS[1] and call.max_tokens == 1
        if stuck or b % 2 == 0:
            texts.append("Well, let me think" if call.max_tokens > 1 else "Well")
        else:
            texts.append(str(b % 6))
    if digest[-1] % 4 == 0 and call.n > 1:
        texts = texts[: call.n - 1]  # a server that returns fewer completions
    return texts


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore.open(tmp_path / "runs.db")
    yield s  # type: ignore[misc]
    s.close()


def run(
    store: RunStore,
    backend: Backend,
    personas: Sequence[str] | None = PERSONAS,
    instrument: Instrument | None = None,
    **options: Any,
) -> Any:
    options.setdefault("progress", False)
    options.setdefault("n_repetitions", 3)
    # Tests name the protocol fields they set; the engine takes them as one settings object
    # (a None field is left unset, so it is taken from the run).
    names = {"n_repetitions": "repetitions", "temperature": "temperature", "seed": "seed"}
    names["mode"] = "mode"
    protocol = {names[k]: options.pop(k) for k in list(options) if k in names}
    options["protocol"] = SamplingSettings(**{k: v for k, v in protocol.items() if v is not None})
    # Tests name the concurrency and backoff directly; the engine takes them as a pacer.
    options["pacing"] = Pacer.create(
        max_concurrency=options.pop("max_concurrency", 8), retry=options.pop("retry", NO_WAIT)
    )
    return run_collection(
        store,
        options.pop("run", None),
        backend,
        personas,
        instrument if instrument is not None else small_instrument(),
        options.pop("template", None),
        close_backend=False,
        **options,
    )


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["persona_id", "item_id", "repetition", "rating", "failures", "response"]
    return frame[cols].sort_values(cols[:3]).reset_index(drop=True)


# --- planning ------------------------------------------------------------------------------


def test_plan_slots_persona_and_self() -> None:
    inst = mfq30()
    slots = plan_slots(inst, n_personas=4, n_repetitions=2)
    assert len(slots) == 4 * 30 * 2
    assert slots[0] == Slot(0, 1, 1)
    assert slots[-1] == Slot(3, 30, 2)
    self_slots = plan_slots(inst, n_personas=None, n_repetitions=10)
    assert len(self_slots) == 300
    assert {s.persona_id for s in self_slots} == {SELF_PERSONA_ID}
    assert len(plan_slots(inst.with_catch(), n_personas=1, n_repetitions=1)) == 32
    done = {(0, 1, 1), (0, 1, 2), (3, 30, 2)}
    rest = plan_slots(inst, n_personas=4, n_repetitions=2, done=done)
    assert len(rest) == 240 - 3
    assert not done & {tuple(s) for s in rest}
    with pytest.raises(ValueError, match="n_repetitions"):
        plan_slots(inst, n_personas=1, n_repetitions=0)
    with pytest.raises(ValueError, match="n_personas"):
        plan_slots(inst, n_personas=0, n_repetitions=1)


def test_derive_seed_is_stable_and_spread() -> None:
    assert derive_seed(0, 1, 2, 3) == derive_seed(0, 1, 2, 3)
    seeds = {
        derive_seed(s, p, i, r)
        for s in range(2)
        for p in range(10)
        for i in range(5)
        for r in range(3)
    }
    assert len(seeds) == 2 * 10 * 5 * 3
    assert all(0 <= s < SEED_MODULUS for s in seeds)


# --- retry logic ---------------------------------------------------------------------------


def test_unparseable_replies_use_all_attempts_then_fail(store: RunStore) -> None:
    backend = FakeBackend(always("maybe"))
    summary = run(store, backend, personas=PERSONAS[:1], n_repetitions=2)
    run_id = summary.run.run_id
    frame = store.ratings_frame(run_id)
    assert len(frame) == 3 * 2
    assert (frame["rating"] == INVALID_RATING).all()
    assert (frame["failures"] == MAX_SHORT_ATTEMPTS + 1).all()
    assert (frame["response"] == "maybe").all()
    assert summary.failed == 6
    assert summary.complete
    # Per cell: MAX_SHORT_ATTEMPTS short requests for both slots, then one long-form request.
    calls = [c for c in backend.calls if c.item_id == 1]
    assert [c.max_tokens for c in calls] == [SHORT_MAX_TOKENS] * MAX_SHORT_ATTEMPTS + [
        LONG_MAX_TOKENS
    ]
    assert all(c.n == 2 for c in calls)
    assert len({c.seed for c in calls}) == len(calls)
    attempts = store.attempts_frame(run_id)
    assert len(attempts) == 6 * (MAX_SHORT_ATTEMPTS + 1)
    slot = attempts[(attempts["item_id"] == 1) & (attempts["repetition"] == 2)]
    assert slot["attempt"].tolist() == list(range(1, MAX_SHORT_ATTEMPTS + 2))
    assert slot["long_form"].tolist() == [False] * MAX_SHORT_ATTEMPTS + [True]
    assert slot["max_tokens"].tolist()[-1] == LONG_MAX_TOKENS
    assert slot["rating"].isna().all()
    assert set(slot["error"]) == {"no rating"}
    assert store.get_run(run_id).status == "complete"


def test_long_form_reply_rescues_a_slot(store: RunStore) -> None:
    def reply(call: Call, index: int) -> list[str]:
        text = "Hmm" if call.max_tokens == SHORT_MAX_TOKENS else "I would say 4, mostly."
        return [text] * call.n

    summary = run(store, FakeBackend(reply), personas=PERSONAS[:1], n_repetitions=1)
    frame = store.ratings_frame(summary.run.run_id)
    assert frame["rating"].tolist() == [4, 4, 4]
    assert frame["failures"].tolist() == [MAX_SHORT_ATTEMPTS] * 3
    assert summary.failed == 0


def test_each_reply_fills_its_own_slot(store: RunStore) -> None:
    script = {0: ["4", "no", "5"], 1: ["x"], 2: ["2"]}
    backend = FakeBackend(lambda call, index: script[index])
    summary = run(store, backend, personas=PERSONAS[:1], instrument=small_instrument(1))
    frame = store.ratings_frame(summary.run.run_id)
    assert frame["rating"].tolist() == [4, 2, 5]
    assert frame["failures"].tolist() == [0, 2, 0]
    assert [c.n for c in backend.calls] == [3, 1, 1]
    assert summary.attempts == 5


def test_fewer_texts_than_asked_are_asked_again(store: RunStore) -> None:
    backend = FakeBackend(lambda call, index: ["3"] * min(call.n, 2))
    summary = run(store, backend, personas=PERSONAS[:1], n_repetitions=5)
    frame = store.ratings_frame(summary.run.run_id)
    assert len(frame) == 3 * 5
    assert (frame["rating"] == 3).all()
    assert (frame["failures"] == 0).all()  # a missing completion is not a failed attempt
    assert [c.n for c in backend.calls if c.item_id == 1] == [5, 3, 1]
    assert summary.attempts == 15


def test_more_texts_than_asked_are_ignored(store: RunStore) -> None:
    backend = FakeBackend(lambda call, index: ["1"] * (call.n + 4))
    summary = run(store, backend, personas=PERSONAS[:1])
    assert store.counts(summary.run.run_id).slots == 9
    assert summary.attempts == 9


def test_empty_replies_count_as_attempts(store: RunStore) -> None:
    backend = FakeBackend(lambda call, index: [])
    summary = run(store, backend, personas=PERSONAS[:1], n_repetitions=2)
    frame = store.ratings_frame(summary.run.run_id)
    assert (frame["rating"] == INVALID_RATING).all()
    assert (frame["failures"] == MAX_SHORT_ATTEMPTS + 1).all()
    assert len(backend.calls) == 3 * (MAX_SHORT_ATTEMPTS + 1)
    attempts = store.attempts_frame(summary.run.run_id)
    assert set(attempts["error"]) == {"empty reply"}


# --- backend errors ------------------------------------------------------------------------


def test_transient_errors_are_retried(store: RunStore) -> None:
    def fail(call: Call, index: int) -> BaseException | None:
        return TransientBackendError("rate limited") if index % 3 < 2 else None

    backend = FakeBackend(always("2"), fail=fail)
    summary = run(store, backend, max_concurrency=1)
    assert summary.complete
    assert store.counts(summary.run.run_id).slots == 2 * 3 * 3
    attempts = store.attempts_frame(summary.run.run_id)
    transient = attempts[attempts["repetition"].isna()]
    assert len(transient) == 2 * 6
    assert transient["error"].str.startswith("transient: rate limited").all()
    # Retries reuse the request seed: the stored answers do not depend on the errors.
    seeds = [c.seed for c in backend.calls]
    assert seeds[0] == seeds[1] == seeds[2]


def test_retry_after_is_honoured(store: RunStore) -> None:
    def fail(call: Call, index: int) -> BaseException | None:
        return TransientBackendError("slow down", retry_after=0.3) if index == 0 else None

    started = time.perf_counter()
    summary = run(store, FakeBackend(always("2"), fail=fail), personas=PERSONAS[:1])
    assert time.perf_counter() - started >= 0.3
    assert summary.complete


def test_exhausted_retries_stop_the_run(store: RunStore) -> None:
    backend = FakeBackend(always("2"), fail=lambda call, index: TransientBackendError("503"))
    with pytest.raises(BackendError, match="rerun to resume") as info:
        run(store, backend, retry=RetryPolicy(max_retries=2, initial_wait=0, jitter=0))
    assert "503" in str(info.value)
    assert len(backend.calls) <= 3 * 8  # at most 3 tries per worker
    record = store.list_runs()[0]
    assert record.status == "failed"
    # A healthy backend resumes and completes the run.
    summary = run(store, FakeBackend(always("2")))
    assert summary.complete
    assert summary.done_before == 0
    assert store.counts(record.run_id).slots == 18


def test_backend_error_keeps_collected_answers_and_resume_asks_only_missing(
    store: RunStore,
) -> None:
    inst = small_instrument(3)

    def fail(call: Call, index: int) -> BaseException | None:
        return BackendError("model not found") if call.item_id == 3 else None

    broken = FakeBackend(always("4"), fail=fail)
    with pytest.raises(BackendError, match="item 3") as info:
        run(store, broken, instrument=inst, max_concurrency=1)
    assert "model not found" in str(info.value)
    run_id = store.list_runs()[0].run_id
    # The cells before the failure are stored (one worker: cells in order).
    assert store.completed_slots(run_id) == {(0, i, r) for i in (1, 2) for r in (1, 2, 3)}
    healthy = FakeBackend(always("4"))
    summary = run(store, healthy, instrument=inst, max_concurrency=1)
    assert summary.done_before == 6
    assert summary.collected == 12
    asked = {(c.persona, c.item_id) for c in healthy.calls}
    assert (PERSONAS[0], 1) not in asked
    assert (PERSONAS[0], 3) in asked
    assert store.counts(run_id).slots == 18
    # Running again finds nothing to do.
    again = FakeBackend(always("4"))
    assert run(store, again, instrument=inst).collected == 0
    assert again.calls == []


@pytest.mark.parametrize("stop_fraction", [0.0, 0.2, 0.45, 0.7, 0.95])
def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, stop_fraction: float) -> None:
    inst = small_instrument(3)
    with RunStore.open(tmp_path / "whole.db") as whole:
        reference = FakeBackend(seeded_reply)
        run(whole, reference, instrument=inst, n_repetitions=4, seed=7)
        expected = comparable(whole.ratings_frame(1))
        expected_attempts = whole.attempts_frame(1).drop(columns="created_at")
    # Several rounds per cell, so interruptions land inside cells.
    assert len(reference.calls) > 3 * len(reference.per_cell)
    assert (expected["failures"] >= MAX_SHORT_ATTEMPTS).sum() == 4
    stop_after = int(stop_fraction * len(reference.calls))

    with RunStore.open(tmp_path / "parts.db") as parts:
        crash = FakeBackend(
            seeded_reply,
            fail=lambda call, index: BackendError("crash") if index >= stop_after else None,
        )
        with pytest.raises(BackendError):
            run(parts, crash, instrument=inst, n_repetitions=4, seed=7, max_concurrency=3)
        run(parts, FakeBackend(seeded_reply), instrument=inst, n_repetitions=4, seed=7)
        got = comparable(parts.ratings_frame(1))
        attempts = parts.attempts_frame(1).drop(columns="created_at")
    pd.testing.assert_frame_equal(got, expected)
    key = ["persona_id", "item_id", "repetition", "attempt"]
    slot_attempts = attempts[attempts["repetition"].notna()].astype({"repetition": "int64"})
    slot_attempts = slot_attempts.sort_values(key)
    pd.testing.assert_frame_equal(
        slot_attempts.reset_index(drop=True),
        expected_attempts.sort_values(key).reset_index(drop=True),
    )


class _StallsAfter(FakeBackend):
    """Answers the first ``answered`` calls, then hangs until cancelled (no timing race)."""

    def __init__(self, answered: int) -> None:
        super().__init__(always("1"))
        self.answered = answered

    async def generate(self, prompts: Sequence[Prompt], **kwargs: Any) -> list[Generation]:
        if len(self.calls) >= self.answered:
            await asyncio.Event().wait()
        return await super().generate(prompts, **kwargs)


def test_cancellation_keeps_answers_and_marks_run_interrupted(store: RunStore) -> None:
    backend = _StallsAfter(answered=3)
    updates: list[ProgressUpdate] = []

    async def main() -> None:
        task = asyncio.ensure_future(
            collect(
                store,
                None,
                backend,
                PERSONAS,
                small_instrument(),
                pacing=PacingSettings(max_concurrency=2),
                progress=updates.append,
                protocol=SamplingSettings(repetitions=3),
            )
        )
        while len(updates) < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    record = store.list_runs()[0]
    assert record.status == "interrupted"
    stored = store.counts(record.run_id).slots
    assert 9 <= stored < 18
    summary = run(store, FakeBackend(always("1")))
    assert summary.done_before == stored
    assert store.counts(record.run_id).slots == 18
    assert store.get_run(record.run_id).status == "complete"


# --- runs, settings and modes --------------------------------------------------------------


def test_progress_callback_and_usage(store: RunStore) -> None:
    updates: list[ProgressUpdate] = []
    summary = run(store, FakeBackend(always("5")), progress=updates.append)
    assert updates[-1].done == updates[-1].total == 18
    assert [u.done for u in updates] == sorted(u.done for u in updates)
    requests, usage = store.usage(summary.run.run_id)
    assert requests == summary.requests == 6
    assert usage == summary.usage == Usage(prompt_tokens=60, completion_tokens=18)


def test_rich_progress_bar_runs(store: RunStore) -> None:
    summary = run(store, FakeBackend(always("5")), progress=True)
    assert summary.complete


def test_self_run_on_fake_backend(store: RunStore) -> None:
    backend = FakeBackend(always("3"))
    summary = run(store, backend, personas=None)
    assert summary.run.kind == "self"
    frame = store.ratings_frame(summary.run.run_id)
    assert len(frame) == 9
    assert (frame["persona_id"] == SELF_PERSONA_ID).all()
    assert {c.persona for c in backend.calls} == {None}


def test_resume_with_other_inputs_is_refused(store: RunStore) -> None:
    summary = run(store, FakeBackend(always("3")))
    record = summary.run
    with pytest.raises(ConfigError, match="persona set"):
        run(store, FakeBackend(always("3")), personas=["Someone else."], run=record)
    with pytest.raises(ConfigError, match="instrument"):
        run(store, FakeBackend(always("3")), instrument=small_instrument(2), run=record)
    with pytest.raises(ConfigError, match="n_repetitions"):
        run(store, FakeBackend(always("3")), run=record, n_repetitions=5)
    other = PromptTemplate(
        persona_system="Be {persona}.",
        persona_user="{item}?",
        self_system=None,
        self_user="{item}?",
    )
    with pytest.raises(ConfigError, match="template"):
        run(store, FakeBackend(always("3")), run=record, template=other)
    with pytest.raises(ConfigError, match="no personas"):
        run(store, FakeBackend(always("3")), personas=None, run=record)
    self_record = run(store, FakeBackend(always("3")), personas=None).run
    with pytest.raises(ConfigError, match="self run"):
        run(store, FakeBackend(always("3")), run=self_record)


def test_explicit_spec_and_record_resume(store: RunStore) -> None:
    inst = small_instrument()
    backend = FakeBackend(always("3"))
    spec = make_run_spec(
        backend=backend,
        instrument=inst,
        personas=PERSONAS,
        template=DEFAULT_TEMPLATE,
        name="my-run",
        protocol=SamplingSettings(repetitions=2),
    )
    assert spec.model == "fake"
    first = run(store, backend, run=spec, instrument=inst, n_repetitions=None)
    assert first.run.name == "my-run"
    assert first.total == 12
    second = run(store, backend, run=first.run, instrument=inst, n_repetitions=None)
    assert second.collected == 0
    assert len(store.list_runs()) == 1


def test_run_collection_closes_backend(store: RunStore) -> None:
    backend = FakeBackend(always("3"))
    run_collection(store, None, backend, PERSONAS, small_instrument(), progress=False)
    assert backend.closed


def test_exact_mode_stores_distributions(store: RunStore) -> None:
    backend = DistributionBackend(always("3"))
    summary = run(store, backend, mode="exact")
    assert summary.total == 6
    assert summary.collected == 6
    assert backend.calls == []  # no sampling in exact mode
    frame = store.distributions_frame(summary.run.run_id)
    assert len(frame) == 6
    assert frame.loc[frame["item_id"] == 2, "p2"].tolist() == [1.0, 1.0]
    assert store.counts(summary.run.run_id).slots == 0
    assert run(store, backend, mode="exact").collected == 0
    with pytest.raises(ConfigError, match="distributions"):
        run(store, FakeBackend(always("3")), mode="exact", seed=1)


def test_invalid_concurrency(store: RunStore) -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        run(store, FakeBackend(always("3")), max_concurrency=0)


# --- the simulator -------------------------------------------------------------------------


def test_simulator_full_persona_run(store: RunStore) -> None:
    personas = builtin_personas()
    assert len(personas) == 100
    summary = run_collection(
        store,
        None,
        SimulatorBackend("base"),
        personas,
        mfq30(),
        progress=False,
        protocol=SamplingSettings(repetitions=10),
    )
    assert summary.complete
    assert summary.collected == 30_000
    run_id = summary.run.run_id
    counts = store.counts(run_id)
    assert counts.slots == counts.rows == 30_000
    frame = store.ratings_frame(run_id)
    assert not frame.duplicated(["persona_id", "item_id", "repetition"]).any()
    assert frame["rating"].between(0, 5).mean() > 0.99
    assert store.personas(run_id) == list(personas)
    assert counts.attempts > 30_000  # the simulator's unparseable replies were retried


def test_simulator_self_run(store: RunStore) -> None:
    summary = run_collection(
        store,
        None,
        SimulatorBackend("insecure"),
        None,
        mfq30(),
        progress=False,
        protocol=SamplingSettings(repetitions=10),
    )
    frame = store.ratings_frame(summary.run.run_id)
    assert len(frame) == 300
    assert summary.run.kind == "self"
    assert (frame["persona_id"] == SELF_PERSONA_ID).all()
    assert sorted(frame["item_id"].unique().tolist()) == list(range(1, 31))


def test_simulator_exact_mode(store: RunStore) -> None:
    personas = builtin_personas()[:5]
    summary = run_collection(
        store,
        None,
        SimulatorBackend("base"),
        personas,
        mfq30(),
        progress=False,
        protocol=SamplingSettings(mode="exact"),
    )
    frame = store.distributions_frame(summary.run.run_id)
    assert len(frame) == 5 * 30
    probs = frame[[f"p{k}" for k in range(6)]].to_numpy()
    assert abs(probs.sum(axis=1) - 1).max() < 1e-9


class _BatchCountingSimulator(SimulatorBackend):
    """The simulator with a small batch limit that records each distributions() batch."""

    max_batch_size = 7

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batches: list[int] = []

    async def distributions(
        self, prompts: Sequence[Prompt], *, scale: Sequence[int], temperature: float
    ) -> list[ScaleDistribution]:
        self.batches.append(len(prompts))
        return await super().distributions(prompts, scale=scale, temperature=temperature)


def test_exact_mode_batches_cells_up_to_the_backend_limit(tmp_path: Path) -> None:
    instrument = mfq30()
    personas = list(builtin_personas().head(3))
    backend = _BatchCountingSimulator(instrument=instrument)
    with RunStore.open(tmp_path / "exact.db") as store:
        summary = run_collection(
            store,
            None,
            backend,
            personas,
            instrument,
            progress=False,
            protocol=SamplingSettings(mode="exact"),
        )
        frame = store.distributions_frame(summary.run.run_id)
    cells = 3 * 30
    assert summary.total == cells and summary.complete
    assert max(backend.batches) == 7 and sum(backend.batches) == cells
    assert summary.requests == len(backend.batches) == -(-cells // 7)
    assert len(frame) == cells
    assert not frame.duplicated(["persona_id", "item_id"]).any()
    # how cells are batched does not change the stored distributions (7 vs 64 per call)
    single = SimulatorBackend(instrument=instrument)
    with RunStore.open(tmp_path / "single.db") as store:
        ref = run_collection(
            store,
            None,
            single,
            personas,
            instrument,
            progress=False,
            protocol=SamplingSettings(mode="exact"),
        )
        ref_frame = store.distributions_frame(ref.run.run_id)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), ref_frame.reset_index(drop=True))


# --- protocol verdict (issue 15.4) -----------------------------------------------------------


def test_model_that_never_starts_with_a_rating_gets_the_protocol_verdict(
    store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    # A weak model: short replies are words, long replies echo the scale (never an answer).
    def reply(call: Call, index: int) -> list[str]:
        if call.max_tokens == SHORT_MAX_TOKENS:
            return ["As"] * call.n
        return ["Rating scale:\n0 = not at all relevant\n1 = not very relevant"] * call.n

    with caplog.at_level("WARNING", logger="persona_collapse.engine.collect"):
        summary = run(store, FakeBackend(reply), n_repetitions=2)
    meta = store.get_run(summary.run.run_id).metadata
    check = meta["protocol_check"]
    assert check["follows"] is False and check["mode"] == "sampling"
    assert check["measures"]["first_reply_rating_share"] == 0.0
    assert check["measures"]["fallback_share"] == 1.0
    assert (store.ratings_frame(summary.run.run_id)["rating"] == INVALID_RATING).all()  # no echo
    assert any("does not follow the protocol" in r.getMessage() for r in caplog.records)


def test_model_that_answers_follows_the_protocol(
    store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="persona_collapse.engine.collect"):
        summary = run(store, FakeBackend(lambda call, index: ["3"] * call.n))
    check = store.get_run(summary.run.run_id).metadata["protocol_check"]
    assert check["follows"] is True and check["reasons"] == []
    assert not any("does not follow" in r.getMessage() for r in caplog.records)
