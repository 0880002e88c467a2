"""Control tasks collected through the one engine: stored replies, resume, export, truth."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from _kill_drill import start_child, stored_slots
from persona_collapse.backends.sim_controls import BROAD_OVERRIDES
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.controls import (
    arithmetic_items,
    capability_task,
    items_from_dict,
    lookup_task,
)
from persona_collapse.core.types import Generation
from persona_collapse.engine.controls import control_spec, run_control_collection
from persona_collapse.stats.controls import ControlAnswers, capability_metrics, lookup_metrics
from persona_collapse.store.control_csv import read_capability_csv, read_lookup_csv
from persona_collapse.store.control_store import ControlStore

T = 0.7


def mmlu_items(n: int = 60):  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    rows = [
        {
            "item_id": i,
            "subject": f"s{i % 3}",
            "question": f"Question number {i}?",
            "choices": ["one", "two", "three", "four"],
            "answer": "ABCD"[rng.randrange(4)],
        }
        for i in range(n)
    ]
    return items_from_dict({"items": rows}, task="mmlu")


def collect(path: Path, task, backend, n: int = 10, name: str = "run"):  # type: ignore[no-untyped-def]
    spec = control_spec(task, backend, name=name, temperature=T, repetitions=n, seed=7)
    with ControlStore.open(path) as store:
        summary = run_control_collection(store, task, backend, spec)
        answers = store.answers(summary.run.run_id)
    return summary, answers


def test_every_reply_is_stored_and_resume_adds_nothing(tmp_path: Path) -> None:
    task = capability_task(arithmetic_items(15))
    summary, answers = collect(tmp_path / "c.db", task, SimulatorBackend("base"))
    assert summary.complete and summary.added == 150 == len(answers)
    assert all(a.response and "####" in a.response for a in answers)
    assert all(a.format_valid for a in answers)
    again, answers2 = collect(tmp_path / "c.db", task, SimulatorBackend("base"))
    assert again.added == 0 and again.requests == 0 and answers2 == answers


def test_export_reads_back_through_metrics(tmp_path: Path) -> None:
    task = capability_task(mmlu_items(20))
    summary, _ = collect(tmp_path / "c.db", task, SimulatorBackend("base"))
    with ControlStore.open(tmp_path / "c.db") as store:
        out = store.export_csv(summary.run.run_id, tmp_path / "base_mmlu.csv")
    run = read_capability_csv(out)
    assert run.task == "mmlu" and len(run.item_id) == 200
    assert set(run.subject) == {"s0", "s1", "s2"}
    m = capability_metrics(ControlAnswers.from_run(run), n_item_boot=50, n_rep_boot=20, rng=1)
    assert 0 < m.accuracy_all <= 1


def test_lookup_export_and_metrics(tmp_path: Path) -> None:
    task = lookup_task()
    summary, answers = collect(tmp_path / "c.db", task, SimulatorBackend("base"), n=5)
    assert len(answers) == 150
    with ControlStore.open(tmp_path / "c.db") as store:
        out = store.export_csv(summary.run.run_id, tmp_path / "base_lookup.csv")
    run = read_lookup_csv(out)
    m = lookup_metrics(run.table_id, run.rating, run.correct_id)
    assert m.format_valid_rate == 1.0 and m.n_tables == 30


@pytest.mark.parametrize("overrides", [{}, dict(BROAD_OVERRIDES)], ids=["base", "broad"])
def test_simulator_truth_recovered_within_two_se(tmp_path: Path, overrides: dict) -> None:
    items = mmlu_items(200)
    task = capability_task(items)
    backend = SimulatorBackend("insecure", seed=2, **overrides)
    _, answers = collect(tmp_path / "c.db", task, backend)
    data = ControlAnswers.from_arrays(
        [a.item_id for a in answers], [a.answer for a in answers], [a.correct for a in answers]
    )
    m = capability_metrics(data, n_item_boot=400, n_rep_boot=100, rng=3)
    truth = backend.true_control_metrics(
        [("mmlu", it.item_id, it.gold) for it in items.items], temperature=T, repetitions=10
    )
    assert abs(m.accuracy_all - truth["accuracy"]) < 2 * m.accuracy_se
    assert abs(m.non_unanimity_rate - truth["non_unanimity_rate"]) < 2 * m.non_unanimity_se


def test_broad_knobs_degrade_accuracy_and_stability() -> None:
    items = [("mmlu", i, "ABCD"[i % 4]) for i in range(400)]
    base = SimulatorBackend("insecure").true_control_metrics(items, temperature=T, repetitions=10)
    broad = SimulatorBackend("insecure", **BROAD_OVERRIDES).true_control_metrics(
        items, temperature=T, repetitions=10
    )
    assert broad["accuracy"] < base["accuracy"] - 0.2
    assert broad["non_unanimity_rate"] > base["non_unanimity_rate"] + 0.3


def test_control_knobs_leave_persona_runs_and_describe_alone() -> None:
    assert "controls" not in SimulatorBackend("insecure").describe()
    assert "controls" in SimulatorBackend("insecure", control_accuracy=0.5).describe()


CHILD = """
import sys
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.controls import arithmetic_items, capability_task
from persona_collapse.engine.controls import control_spec, run_control_collection
from persona_collapse.store.control_store import ControlStore

task = capability_task(arithmetic_items(1500))
backend = SimulatorBackend("base", seed=3)
spec = control_spec(task, backend, name="kill", temperature=0.7, repetitions=10, seed=7)
with ControlStore.open(sys.argv[1]) as store:
    run_control_collection(store, task, backend, spec)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_kill_and_resume_of_a_control_run(tmp_path: Path) -> None:
    total = 15000
    task = capability_task(arithmetic_items(1500))
    _, expected = collect(
        tmp_path / "whole.db", task, SimulatorBackend("base", seed=3), name="kill"
    )
    path = tmp_path / "killed.db"
    kills = 0
    for _ in range(6):
        before = stored_slots(path, "control_answers")
        child = start_child(CHILD, str(path))
        deadline = time.monotonic() + 60
        while stored_slots(path, "control_answers") <= before and child.poll() is None:
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.005)
        time.sleep(0.05)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        assert child.stderr is not None
        err = child.stderr.read().decode()
        child.stderr.close()
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, err
        kills += 1
        if kills >= 2:
            break
    assert kills >= 1
    child = start_child(CHILD, str(path))
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()
    with ControlStore.open(path, create=False) as store:
        (run,) = store.list_runs()
        got = store.answers(run.run_id)
    assert run.status == "complete" and len(got) == total
    strip = [(a.item_id, a.run_index, a.response, a.answer, a.correct) for a in got]
    assert strip == [(a.item_id, a.run_index, a.response, a.answer, a.correct) for a in expected]


class OneReplyAtATime(SimulatorBackend):
    """A server that ignores ``n``: one reply per request."""

    async def generate(self, prompts, *, n, temperature, max_tokens, seed=None):  # type: ignore[no-untyped-def,override]
        out = await super().generate(
            prompts, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed
        )
        return [Generation(g.texts[:1], g.usage) for g in out]


def test_a_backend_ignoring_n_is_asked_again_for_the_rest(tmp_path: Path) -> None:
    task = capability_task(arithmetic_items(4))
    summary, answers = collect(tmp_path / "c.db", task, OneReplyAtATime("base"), n=3)
    assert summary.complete and summary.requests == 12
    assert sorted((a.item_id, a.run_index) for a in answers) == [
        (i, r) for i in range(4) for r in (1, 2, 3)
    ]
