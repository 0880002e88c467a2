"""The ``inspect`` backend on inspect_ai's ``mockllm`` provider (no network)."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from _inspect_mock import SeededOutputs, logging_restored
from _kill_drill import start_child, stored_slots
from persona_collapse.backends import create_backend
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.errors import (
    BackendError,
    ConfigError,
    MissingDependencyError,
    TransientBackendError,
)
from persona_collapse.core.instrument import instrument_from_dict, mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.core.prompts import DEFAULT_TEMPLATE, render_prompt
from persona_collapse.engine.collect import run_collection
from persona_collapse.engine.pacing import Pacer, RetryPolicy
from persona_collapse.store.sqlite import RunStore

needs_inspect = pytest.mark.skipif(
    importlib.util.find_spec("inspect_ai") is None,
    reason="inspect_ai is not installed (pip install 'persona-collapse[inspect]')",
)
TESTS = Path(__file__).resolve().parents[1]
PERSONAS = tuple(builtin_personas()[:4])
SCALE = tuple(range(6))


@pytest.fixture(autouse=True, scope="module")
def _inspect_logging() -> Iterator[None]:
    """inspect's eval reconfigures process-wide logging; later tests must not see it."""
    with logging_restored():
        yield


def small_instrument(n_items: int = 5) -> Any:
    data = mfq30().to_dict()
    data["name"] = f"mfq-{n_items}"
    data["items"] = data["items"][:n_items]
    return instrument_from_dict(data)


def mock_backend(outputs: Any, **options: Any) -> Any:
    return create_backend(
        "inspect", model="mockllm/model", model_args={"custom_outputs": outputs}, **options
    )


def collect(store: RunStore, backend: Any, *, mode: str = "sampling", **kwargs: Any) -> Any:
    protocol = SamplingSettings(repetitions=3, seed=5, mode=mode)
    return run_collection(
        store,
        None,
        backend,
        PERSONAS,
        small_instrument(),
        protocol=protocol,
        progress=False,
        **kwargs,
    )


def test_model_must_name_a_provider() -> None:
    with pytest.raises(ConfigError, match="PROVIDER/MODEL"):
        create_backend("inspect", model="gpt-4o")


def test_without_inspect_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "inspect_ai.model", None)
    with pytest.raises(MissingDependencyError, match=r"persona-collapse\[inspect\]"):
        create_backend("inspect", model="mockllm/model")


@needs_inspect
def test_reduced_run_one_request_per_sample(tmp_path: Path) -> None:
    outputs = SeededOutputs(choices=False)
    with RunStore.open(tmp_path / "s.db") as store:
        summary = collect(store, mock_backend(outputs))
        run = store.get_run(summary.run.run_id)
        frame = store.ratings_frame(run.run_id)
        attempts = store.attempts_frame(run.run_id)
        requests, usage = store.usage(run.run_id)
    assert summary.complete and len(frame) == len(PERSONAS) * 5 * 3
    assert frame["rating"].between(0, 5).all()
    assert frame["rating"].nunique() >= 4
    # Each persona answers differently, and repetitions of a cell differ somewhere.
    assert frame.groupby("persona_id")["rating"].mean().nunique() > 1
    assert (frame.groupby(["persona_id", "item_id"])["rating"].nunique() > 1).any()
    # The short-answer retry protocol ran: some first replies were not ratings.
    assert (attempts["attempt"] > 1).any()
    # mockllm returns one choice however many are asked for: one request per sample.
    assert outputs.requests == len(attempts)
    meta = run.metadata
    assert meta["backend"]["honours_num_choices"] is False
    assert "inspect-one-per-sample" in meta["protocols"]
    assert "inspect-num-choices" not in meta["protocols"]
    assert usage.prompt_tokens == 11 * outputs.requests
    assert usage.completion_tokens == outputs.requests
    assert requests == summary.requests


@needs_inspect
def test_num_choices_used_where_the_provider_honours_it(tmp_path: Path) -> None:
    outputs = SeededOutputs(choices=True)
    with RunStore.open(tmp_path / "s.db") as store:
        summary = collect(store, mock_backend(outputs))
        run = store.get_run(summary.run.run_id)
    assert summary.complete
    cells = len(PERSONAS) * 5
    # One request per cell for its three repetitions, plus re-asks of unparsed replies.
    assert cells <= outputs.requests < cells * 2
    assert run.metadata["backend"]["honours_num_choices"] is True
    assert run.metadata["protocols"] == ["inspect-num-choices"]


@needs_inspect
def test_exact_mode_reads_first_token_logprobs(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "s.db") as store:
        summary = collect(store, mock_backend(SeededOutputs()), mode="exact")
        dists = store.distributions_frame(summary.run.run_id)
    assert summary.complete and len(dists) == len(PERSONAS) * 5
    # The mock's first-token probabilities fall with the value; all its mass is on the
    # scale. At the run temperature (0.1) nearly everything moves to 0.
    assert dists["mass"].to_numpy() == pytest.approx(1.0)
    assert (dists["p0"] > 0.99).all()
    assert (dists["p1"] > dists["p2"]).all()


@needs_inspect
def test_exact_mode_without_logprobs_is_a_clear_error() -> None:
    backend = mock_backend(SeededOutputs(logprobs=False))
    prompt = render_prompt(DEFAULT_TEMPLATE, mfq30(), 1, PERSONAS[0])

    async def main() -> Any:
        try:
            with pytest.raises(BackendError, match="returned no logprobs") as info:
                await backend.distributions([prompt], scale=SCALE, temperature=1.0)
            assert not isinstance(info.value, TransientBackendError)
            return await backend.preflight(prompt, mode="exact", scale=SCALE)
        finally:
            await backend.aclose()

    (behaviour,) = asyncio.run(main())
    assert behaviour.problems and "mode 'sampling'" in behaviour.problems[0]


class Flaky:
    """Fails the first ``failures`` requests with ``error``, then answers like ``SeededOutputs``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.left = failures
        self.error = error
        self.inner = SeededOutputs(choices=False)

    def __call__(self, *args: Any) -> Any:
        if self.left > 0:
            self.left -= 1
            raise self.error
        return self.inner(*args)


@needs_inspect
def test_provider_failures_are_classified_for_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspect_ai.model._model import RetryDecision
    from inspect_ai.model._providers.mockllm import MockLLM

    def should_retry(self: Any, ex: Exception) -> Any:
        if "slow down" in str(ex):
            return RetryDecision.rate_limit(retry_after=0.01)
        return RetryDecision.no()

    monkeypatch.setattr(MockLLM, "should_retry", should_retry)
    prompt = render_prompt(DEFAULT_TEMPLATE, mfq30(), 1, PERSONAS[0])

    async def first_error(error: Exception) -> BackendError:
        backend = mock_backend(Flaky(1, error))
        try:
            with pytest.raises(BackendError) as info:
                await backend.generate([prompt], n=1, temperature=1.0, max_tokens=1, seed=1)
            return info.value
        finally:
            await backend.aclose()

    limited = asyncio.run(first_error(RuntimeError("429: slow down")))
    assert isinstance(limited, TransientBackendError)
    assert limited.rate_limited and limited.retry_after == pytest.approx(0.01)
    refused = asyncio.run(first_error(ValueError("400: unknown model")))
    assert not isinstance(refused, TransientBackendError)
    assert "unknown model" in str(refused)

    # inspect makes one attempt; the engine's retries carry the run through.
    outputs = Flaky(3, RuntimeError("429: slow down"))
    fast = RetryPolicy(max_retries=5, initial_wait=0.0, max_wait=0.0, jitter=0.0)
    pacing = Pacer.create(max_concurrency=1, retry=fast)
    with RunStore.open(tmp_path / "s.db") as store:
        summary = collect(store, mock_backend(outputs), pacing=pacing)
    assert summary.complete and outputs.left == 0
    assert summary.rate_limited == 3


@needs_inspect
def test_secrets_never_reach_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-inspect-planted-0123456789abcdef"
    monkeypatch.setenv("PC_INSPECT_TEST_KEY", key)
    # A provider error that echoes the key (as some do): scrubbed before it is stored.
    outputs = Flaky(1, RuntimeError(f"401 bad key {key}"))
    backend = mock_backend(outputs, api_key_env="PC_INSPECT_TEST_KEY")
    path = tmp_path / "s.db"
    with RunStore.open(path) as store, pytest.raises(BackendError) as info:
        collect(store, backend)
    assert key not in str(info.value)
    backend = mock_backend(
        SeededOutputs(),
        api_key_env="PC_INSPECT_TEST_KEY",
        base_url="http://user:url-password-42@127.0.0.1:9/v1",
    )
    with RunStore.open(path) as store:
        summary = collect(store, backend)
        assert summary.complete
        meta = store.get_run(summary.run.run_id).metadata
    assert meta["backend"]["base_url"] == "http://127.0.0.1:9/v1"
    for file in tmp_path.iterdir():
        data = file.read_bytes()
        assert key.encode() not in data and b"url-password-42" not in data, file


# --- kill and resume ------------------------------------------------------------------------

DRILL_PERSONAS = 3
DRILL_REPS = 3
DRILL_TOTAL = DRILL_PERSONAS * 30 * DRILL_REPS
CHILD = f"""
import sys
sys.path.insert(0, sys.argv[2])
from _inspect_mock import SeededOutputs, logging_restored
from persona_collapse.backends import create_backend
from persona_collapse.core.config import SamplingSettings
from persona_collapse.core.instrument import mfq30
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import run_collection
from persona_collapse.store.sqlite import RunStore

backend = create_backend(
    "inspect", model="mockllm/model", num_choices=False,
    model_args={{"custom_outputs": SeededOutputs(choices=False)}},
)
with RunStore.open(sys.argv[1]) as store:
    run_collection(
        store, None, backend, builtin_personas()[:{DRILL_PERSONAS}], mfq30(),
        protocol=SamplingSettings(repetitions={DRILL_REPS}, seed=7), progress=False,
    )
"""


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["persona_id", "item_id", "repetition", "rating", "failures", "response"]
    return frame[cols].sort_values(cols[:3]).reset_index(drop=True)


@needs_inspect
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_kill_and_resume_through_the_inspect_backend(tmp_path: Path) -> None:
    # The uninterrupted run, in this process (the child's code, without its process).
    backend = create_backend(
        "inspect",
        model="mockllm/model",
        num_choices=False,
        model_args={"custom_outputs": SeededOutputs(choices=False)},
    )
    with RunStore.open(tmp_path / "whole.db") as store:
        summary = run_collection(
            store,
            None,
            backend,
            builtin_personas()[:DRILL_PERSONAS],
            mfq30(),
            protocol=SamplingSettings(repetitions=DRILL_REPS, seed=7),
            progress=False,
        )
        expected = _comparable(store.ratings_frame(summary.run.run_id))
    assert len(expected) == DRILL_TOTAL

    path = tmp_path / "killed.db"
    rng = random.Random(20261202)
    kills: list[int] = []
    for _ in range(8):
        if len(kills) >= 3:
            break
        before = stored_slots(path)
        child = start_child(CHILD, str(path), str(TESTS))
        deadline = time.monotonic() + 120
        while stored_slots(path) <= before and child.poll() is None:
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.3))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        assert child.stderr is not None
        child.stderr.close()
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL
        after = stored_slots(path)
        assert before < after < DRILL_TOTAL
        kills.append(after)
    assert kills, "no kill landed mid-run"
    child = start_child(CHILD, str(path), str(TESTS))
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err.decode()
    with RunStore.open(path, create=False) as store:
        (record,) = store.list_runs()
        assert record.status == "complete"
        frame = store.ratings_frame(record.run_id)
    # No slot lost, none duplicated, and the answers are the uninterrupted run's.
    assert not frame.duplicated(["persona_id", "item_id", "repetition"]).any()
    pd.testing.assert_frame_equal(_comparable(frame), expected)
