"""Full-size runs over HTTP: the openai backend (real SDK) against serve-sim in its own process.

* sampling mode with n = 10: one request per cell, plus re-asks of unparseable replies;
* logprob (exact) mode: exactly one request per cell, and exact moments;
* a server that ignores n: the fallback completes;
* with faults on (10 % 429, 5 % 500, 2 % slow beyond the client timeout, 5 % unparseable
  bodies), SIGKILL at random points and resume: the same 30 000 answers as a clean run.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from _kill_drill import start_child, stored_slots
from persona_collapse.backends.openai_compat import OpenAIBackend
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import CollectionSummary, RetryPolicy, run_collection
from persona_collapse.engine.costs import ModelPrices
from persona_collapse.engine.pacing import Pacer
from persona_collapse.serve import FaultSettings, ServerProcess, SimServerSettings, serve_in_process
from persona_collapse.stats.metrics import analyze_distributions
from persona_collapse.store.sqlite import RunStore

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOTAL = 100 * 30 * 10
CELLS = 100 * 30
RUN_SEED = 5
SERVER_SEED = 2
MIN_KILLS = 3
RETRY = RetryPolicy(max_retries=30, initial_wait=0.02, max_wait=0.5, jitter=0.02)
FAULTS = FaultSettings(
    rate_limit_rate=0.10,
    retry_after=0.05,
    server_error_rate=0.05,
    slow_rate=0.02,
    slow_delay=2.0,
    unparseable_rate=0.05,
    seed=7,
)
CLIENT_TIMEOUT = 1.0


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["persona_id", "item_id", "repetition", "rating", "failures", "response"]
    return frame[cols].sort_values(cols[:3]).reset_index(drop=True)


def collect_over_http(
    store: RunStore, url: str, *, personas: int = 100, **options: Any
) -> CollectionSummary:
    backend = OpenAIBackend("simulator", base_url=url, api_key_env=None, timeout=30)
    concurrency = options.pop("max_concurrency", 32)
    protocol = {"repetitions": 10, "seed": RUN_SEED}
    protocol.update({k: options.pop(k) for k in ("mode", "temperature") if k in options})
    settings: dict[str, Any] = {
        "protocol": SamplingSettings(**protocol),
        "pacing": Pacer.create(max_concurrency=concurrency, retry=RETRY),
        "progress": False,
        **options,
    }
    return run_collection(
        store, None, backend, builtin_personas().head(personas), mfq30(), **settings
    )


@dataclass(frozen=True)
class CleanRun:
    frame: pd.DataFrame
    summary: CollectionSummary
    stats: dict[str, Any]
    rounds_after_first: int
    metadata: dict[str, Any]
    stored_requests: int


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serve_in_process(SimServerSettings(seed=SERVER_SEED)) as running:
        yield running


@pytest.fixture(scope="module")
def clean_run(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """A full sampling run with no faults; the reference of the kill-and-resume drill."""
    server.reset_stats()
    path = tmp_path_factory.mktemp("clean") / "clean.db"
    with RunStore.open(path) as store:
        summary = collect_over_http(store, server.url, prices=ModelPrices(input=1.0, output=2.0))
        run_id = summary.run.run_id
        attempts = store.attempts_frame(run_id)
        later = attempts[attempts["round"] > 0][["persona_id", "item_id", "round"]]
        return CleanRun(
            frame=comparable(store.ratings_frame(run_id)),
            summary=summary,
            stats=server.stats(),
            rounds_after_first=len(later.drop_duplicates()),
            metadata=dict(store.get_run(run_id).metadata),
            stored_requests=store.usage(run_id)[0],
        )


def test_sampling_run_sends_one_request_per_cell(clean_run: CleanRun) -> None:
    summary, stats = clean_run.summary, clean_run.stats
    assert summary.collected == TOTAL and len(clean_run.frame) == TOTAL
    # Every cell is asked once for all 10 repetitions; the only other requests re-ask the
    # few slots whose reply had no rating (the simulator's 2 % unparseable replies).
    assert stats["n_requested"]["10"] == CELLS
    assert stats["requests"] == stats["outcomes"]["ok"] == summary.requests
    assert summary.requests == CELLS + clean_run.rounds_after_first
    assert clean_run.rounds_after_first < 0.25 * CELLS
    assert clean_run.stored_requests == summary.requests
    # Tokens and cost come from the server's usage and are stored with the run.
    assert summary.usage.prompt_tokens == stats["prompt_tokens"]
    assert summary.usage.cached_tokens == stats["cached_tokens"] > 0
    cost = clean_run.metadata["cost"]
    assert cost["requests"] == summary.requests
    assert cost["prompt_tokens"] == stats["prompt_tokens"]
    assert cost["usd"] == pytest.approx(
        (stats["prompt_tokens"] * 1.0 + stats["completion_tokens"] * 2.0) / 1e6
    )
    assert clean_run.metadata["protocols"] == ["short-1-token"]
    assert clean_run.metadata["backend"]["honours_n"] == {
        clean_run.metadata["backend"]["endpoints"][0]: True
    }


def test_logprob_mode_sends_one_request_per_cell_and_gives_exact_moments(
    server: ServerProcess, tmp_path: Path
) -> None:
    server.reset_stats()
    with RunStore.open(tmp_path / "exact.db") as store:
        summary = collect_over_http(store, server.url, mode="exact", temperature=0.1)
        dists = store.distributions_frame(summary.run.run_id)
        metadata = dict(store.get_run(summary.run.run_id).metadata)
    stats = server.stats()
    assert summary.collected == CELLS and len(dists) == CELLS
    assert stats["requests"] == stats["logprob_requests"] == summary.requests == CELLS
    assert metadata["protocols"] == ["logprobs"]
    personas = list(builtin_personas())
    sim = SimulatorBackend("base", seed=SERVER_SEED)
    items = [i.id for i in mfq30().active_items]
    truth = sim.cell_distributions(personas, temperature=0.1, items=items).reshape(CELLS, 6)
    probs = dists[[f"p{k}" for k in range(6)]].to_numpy()
    np.testing.assert_allclose(probs, truth, atol=1e-9)
    assert np.allclose(dists["mass"], 1 - sim.params.unparseable_rate)
    metrics = analyze_distributions(
        dists["persona_id"].to_numpy(),
        dists["item_id"].to_numpy(),
        probs,
        scale=range(6),
        n_persona_boot=1,
        rng=0,
    )
    true = sim.true_metrics(personas, temperature=0.1)
    assert pytest.approx(true.S, rel=1e-9) == metrics.S
    assert metrics.sigma_bar == pytest.approx(true.sigma_bar, rel=1e-9)


def test_server_ignoring_n_falls_back_to_single_requests(tmp_path: Path) -> None:
    settings = SimServerSettings(seed=SERVER_SEED, faults=FaultSettings(ignore_n=True))
    with serve_in_process(settings) as srv, RunStore.open(tmp_path / "n.db") as store:
        summary = collect_over_http(store, srv.url, personas=5, max_concurrency=16)
        counts = store.counts(summary.run.run_id)
        metadata = dict(store.get_run(summary.run.run_id).metadata)
        stats = srv.stats()
    assert counts.slots == counts.rows == 5 * 30 * 10 and summary.collected == 1500
    # One choice per request: at least one request per slot.
    assert stats["choices"] == stats["requests"] == summary.requests >= 1500
    # Only requests sent before the first reply came back asked for n = 10.
    assert stats["n_requested"].get("10", 0) <= 16
    (endpoint,) = metadata["backend"]["endpoints"]
    assert metadata["backend"]["honours_n"] == {endpoint: False}


# --- the faulted kill-and-resume drill ------------------------------------------------------

CHILD = f"""
import sys
from persona_collapse.backends.openai_compat import OpenAIBackend
from persona_collapse.engine.collect import RetryPolicy, run_collection
from persona_collapse.engine.pacing import Pacer
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.store.sqlite import RunStore

backend = OpenAIBackend(
    "simulator", base_url=sys.argv[2], api_key_env=None, timeout={CLIENT_TIMEOUT}
)
with RunStore.open(sys.argv[1]) as store:
    run_collection(
        store, None, backend, builtin_personas(), mfq30(),
        protocol=SamplingSettings(repetitions=10, seed={RUN_SEED}), progress=False,
        pacing=Pacer.create(
            max_concurrency=32,
            retry=RetryPolicy(max_retries=30, initial_wait=0.02, max_wait=0.5, jitter=0.02),
        ),
    )
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_faulted_run_killed_and_resumed_keeps_every_answer_once(
    clean_run: CleanRun, tmp_path: Path
) -> None:
    path = tmp_path / "faulted.db"
    rng = random.Random(20260601)
    history: list[int] = []
    with serve_in_process(SimServerSettings(seed=SERVER_SEED, faults=FAULTS)) as srv:
        tries = 0
        while len(history) < MIN_KILLS and tries < 10:
            tries += 1
            before = stored_slots(path)
            child = start_child(CHILD, str(path), srv.url)
            deadline = time.monotonic() + 120
            while stored_slots(path) <= before and child.poll() is None:
                assert time.monotonic() < deadline, "child made no progress"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.2, 1.5))
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            _, err = child.communicate(timeout=60)
            if child.returncode == 0:
                break
            assert child.returncode == -signal.SIGKILL, err.decode()
            after = stored_slots(path)
            assert before < after < TOTAL
            history.append(after)
        assert len(history) >= MIN_KILLS, f"only {len(history)} kills landed mid-run: {history}"
        child = start_child(CHILD, str(path), srv.url)
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()[-2000:]
        stats = srv.stats()
    # Every kind of fault happened.
    for outcome in ("429", "500", "slow", "unparseable"):
        assert stats["outcomes"].get(outcome, 0) > 0, stats["outcomes"]
    with RunStore.open(path, create=False) as store:
        (record,) = store.list_runs()
        assert record.status == "complete"
        counts = store.counts(record.run_id)
        assert counts.slots == counts.rows == TOTAL
        frame = store.ratings_frame(record.run_id)
    assert not frame.duplicated(["persona_id", "item_id", "repetition"]).any()
    # Faults, retries and kills change nothing: the answers of the clean run, slot by slot.
    pd.testing.assert_frame_equal(comparable(frame), clean_run.frame)
