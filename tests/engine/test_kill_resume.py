"""A collection killed with SIGKILL at random points resumes to the uninterrupted result."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from _kill_drill import start_child, stored_slots
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import run_collection
from persona_collapse.store.sqlite import RunStore

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

TOTAL = 100 * 30 * 10
RUN_SEED = 11
BACKEND_SEED = 3
MIN_KILLS = 3

# The collection a child process runs; argv[1] is the store path.
CHILD = f"""
import sys
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import SamplingSettings
from persona_collapse.engine.collect import run_collection
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.store.sqlite import RunStore

with RunStore.open(sys.argv[1]) as store:
    run_collection(
        store, None, SimulatorBackend("base", seed={BACKEND_SEED}), builtin_personas(), mfq30(),
        protocol=SamplingSettings(repetitions=10, seed={RUN_SEED}), progress=False,
    )
"""


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["persona_id", "item_id", "repetition", "rating", "failures", "response"]
    return frame[cols].sort_values(cols[:3]).reset_index(drop=True)


def slot_attempts(store: RunStore, run_id: int) -> pd.DataFrame:
    frame = store.attempts_frame(run_id).drop(columns="created_at")
    key = ["persona_id", "item_id", "repetition", "attempt"]
    return frame.sort_values(key).reset_index(drop=True)


def test_kill_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # The uninterrupted reference run, in this process.
    with RunStore.open(tmp_path / "whole.db") as whole:
        summary = run_collection(
            whole,
            None,
            SimulatorBackend("base", seed=BACKEND_SEED),
            builtin_personas(),
            mfq30(),
            progress=False,
            protocol=SamplingSettings(repetitions=10, seed=RUN_SEED),
        )
        assert summary.collected == TOTAL
        expected = comparable(whole.ratings_frame(summary.run.run_id))
        expected_attempts = slot_attempts(whole, summary.run.run_id)

    path = tmp_path / "killed.db"
    rng = random.Random(20260527)
    history: list[int] = []
    tries = 0
    while len(history) < MIN_KILLS and tries < 10:
        tries += 1
        before = stored_slots(path)
        child = start_child(CHILD, str(path))
        deadline = time.monotonic() + 60
        # Kill only once the child is writing, after a random (seeded) extra delay.
        while stored_slots(path) <= before and child.poll() is None:
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.35))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        assert child.stderr is not None
        err = child.stderr.read().decode()
        child.stderr.close()
        if child.returncode == 0:
            break  # finished before the kill: too fast a machine for this delay
        assert child.returncode == -signal.SIGKILL, err
        after = stored_slots(path)
        assert before < after < TOTAL
        history.append(after)
    assert len(history) >= MIN_KILLS, f"only {len(history)} kills landed mid-run: {history}"

    # Finish the run.
    child = start_child(CHILD, str(path))
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()

    with RunStore.open(path, create=False) as store:
        (record,) = store.list_runs()
        assert record.status == "complete"
        counts = store.counts(record.run_id)
        assert counts.slots == counts.rows == TOTAL
        frame = store.ratings_frame(record.run_id)
        assert not frame.duplicated(["persona_id", "item_id", "repetition"]).any()
        pd.testing.assert_frame_equal(comparable(frame), expected)
        # Not only the answers: the attempt history equals the uninterrupted run's.
        pd.testing.assert_frame_equal(slot_attempts(store, record.run_id), expected_attempts)
