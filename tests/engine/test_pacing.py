"""Engine pacing and accounting: adaptive concurrency, rate caps, cost and protocol metadata."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from _fakes import PERSONAS, rate_limit_error, small_instrument
from persona_collapse.backends.base import Backend, Generation, Prompt, Usage
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.config import PacingSettings, SamplingSettings
from persona_collapse.core.errors import ConfigError, TransientBackendError
from persona_collapse.core.personas import builtin_personas
from persona_collapse.engine.collect import ProgressUpdate, run_collection
from persona_collapse.engine.costs import ModelPrices, estimate_cost
from persona_collapse.engine.pacing import (
    AdaptiveLimit,
    Pacer,
    RateCap,
    RetryPolicy,
    is_rate_limited,
)
from persona_collapse.store.sqlite import RunStore


class CapacityBackend(Backend):
    """Answers "3"; refuses (429) any request beyond ``capacity`` in flight."""

    name = "capacity"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self.peak = 0
        self.refused = 0
        self.served = 0

    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        if self.in_flight >= self.capacity:
            self.refused += 1
            raise rate_limit_error()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.002)
        finally:
            self.in_flight -= 1
        self.served += 1
        return [Generation(("3",) * n, Usage(100, n, 40))]

    def run_metadata(self) -> dict[str, Any]:
        return {"protocols": ["scripted"], "capacity": self.capacity}


def test_rate_limit_signals() -> None:
    assert is_rate_limited(rate_limit_error())
    assert is_rate_limited(TransientBackendError("503", retry_after=2.0))
    assert not is_rate_limited(TransientBackendError("timeout"))
    assert not is_rate_limited(ValueError("x"))


def test_adaptive_limit_halves_and_grows_back() -> None:
    limit = AdaptiveLimit(16, adaptive=True)
    limit.rate_limited()
    limit.rate_limited()
    assert limit.current == 4 and limit.decreases == 2
    limit.succeeded(utilised=False)
    assert limit.current == 4  # unused headroom does not grow
    for _ in range(3):
        limit.succeeded(utilised=True)
    assert limit.current == 7
    for _ in range(100):
        limit.succeeded(utilised=True)
    assert limit.current == 16
    for _ in range(10):
        limit.rate_limited()
    assert limit.current == 1
    fixed = AdaptiveLimit(8, adaptive=False)
    fixed.rate_limited()
    assert fixed.current == 8


def test_adaptive_limit_blocks_beyond_the_limit() -> None:
    async def scenario() -> list[str]:
        limit = AdaptiveLimit(2, adaptive=True)
        events: list[str] = []

        async def job(name: str) -> None:
            await limit.acquire()
            events.append(f"start {name}")
            await asyncio.sleep(0.01)
            events.append(f"end {name}")
            limit.release()

        await asyncio.gather(job("a"), job("b"), job("c"))
        return events

    events = asyncio.run(scenario())
    assert events.index("start c") > min(events.index("end a"), events.index("end b"))


def test_adaptive_concurrency_finds_the_servers_capacity(tmp_path: Path) -> None:
    retry = RetryPolicy(max_retries=200, initial_wait=0.001, max_wait=0.002, jitter=0.0)
    refused = {}
    for adaptive in (False, True):
        backend = CapacityBackend(capacity=3)
        with RunStore.open(tmp_path / f"{adaptive}.db") as store:
            summary = run_collection(
                store,
                None,
                backend,
                PERSONAS,
                small_instrument(6),
                pacing=Pacer.create(max_concurrency=24, retry=retry, adaptive=adaptive),
                progress=False,
                protocol=SamplingSettings(repetitions=2),
            )
        assert summary.complete and backend.served == 24
        assert summary.rate_limited == backend.refused
        refused[adaptive] = backend.refused
    # Without adaptation most attempts are refused; with it, a few are.
    assert refused[True] < refused[False] / 3, refused


def test_rate_cap_spaces_requests() -> None:
    async def scenario() -> float:
        cap = RateCap(per_minute=1200)  # 20 a second, holding one second's worth
        started = time.perf_counter()
        for _ in range(30):
            await cap.acquire(1)
        return time.perf_counter() - started

    elapsed = asyncio.run(scenario())
    assert 0.4 <= elapsed < 2.0  # 20 at once, then 10 more at 20 a second
    with pytest.raises(ConfigError):
        RateCap(per_minute=0)


def test_token_cap_lets_a_large_request_through_and_charges_it() -> None:
    async def scenario() -> tuple[float, float]:
        cap = RateCap(per_minute=6000)  # 100 tokens a second
        started = time.perf_counter()
        await cap.acquire(150)  # more than the bucket holds: waits for a full bucket only
        first = time.perf_counter() - started
        await cap.acquire(1)  # now the bucket is 50 tokens in debt
        return first, time.perf_counter() - started

    first, second = asyncio.run(scenario())
    assert first < 0.2
    assert second >= 0.45


def test_caps_slow_a_collection_down(tmp_path: Path) -> None:
    backend = CapacityBackend(capacity=100)
    with RunStore.open(tmp_path / "cap.db") as store:
        started = time.perf_counter()
        run_collection(
            store,
            None,
            backend,
            PERSONAS[:2],
            small_instrument(6),
            pacing=PacingSettings(max_concurrency=8, requests_per_minute=1200),
            progress=False,
            protocol=SamplingSettings(repetitions=1),
        )
        elapsed = time.perf_counter() - started
    # 12 requests at 20 a second with a 20-request bucket: immediate. Now a tighter cap.
    assert backend.served == 12 and elapsed < 2.0
    backend = CapacityBackend(capacity=100)
    with RunStore.open(tmp_path / "cap2.db") as store:
        started = time.perf_counter()
        run_collection(
            store,
            None,
            backend,
            PERSONAS[:2],
            small_instrument(6),
            # 500 tokens a second; each request ~100 tokens
            pacing=PacingSettings(max_concurrency=8, tokens_per_minute=60 * 500),
            progress=False,
            protocol=SamplingSettings(repetitions=1),
        )
        assert time.perf_counter() - started >= 0.8


def test_cost_and_protocols_are_recorded(tmp_path: Path) -> None:
    prices = ModelPrices(input=3.0, cached_input=1.0, output=15.0)
    updates: list[ProgressUpdate] = []
    with RunStore.open(tmp_path / "cost.db") as store:
        summary = run_collection(
            store,
            None,
            CapacityBackend(capacity=100),
            PERSONAS[:2],
            small_instrument(6),
            progress=updates.append,
            prices=prices,
            protocol=SamplingSettings(repetitions=3),
        )
        metadata = dict(store.get_run(summary.run.run_id).metadata)
        requests, usage = store.usage(summary.run.run_id)
    assert summary.usage == Usage(12 * 100, 12 * 3, 12 * 40) == usage
    assert summary.cost_usd == pytest.approx(estimate_cost(usage, prices))
    assert updates[-1].usage == usage and updates[-1].cost_usd == pytest.approx(summary.cost_usd)
    assert metadata["protocols"] == ["scripted"]
    assert metadata["backend"] == {"capacity": 100}
    assert metadata["cost"]["usd"] == pytest.approx(summary.cost_usd)
    assert metadata["cost"]["requests"] == requests == 12
    assert metadata["cost"]["prices"] == prices.model_dump()


def test_simulator_runs_record_their_protocol(tmp_path: Path) -> None:
    personas = builtin_personas().head(2)
    with RunStore.open(tmp_path / "sim.db") as store:
        sampled = run_collection(
            store, None, SimulatorBackend("base"), personas, small_instrument(6), progress=False
        )
        exact = run_collection(
            store,
            None,
            SimulatorBackend("base"),
            personas,
            small_instrument(6),
            progress=False,
            protocol=SamplingSettings(mode="exact"),
        )
        assert store.get_run(sampled.run.run_id).metadata["protocols"] == ["short-1-token"]
        assert store.get_run(exact.run.run_id).metadata["protocols"] == ["exact-distribution"]
        assert "usd" not in store.get_run(exact.run.run_id).metadata["cost"]
        # A session with nothing left to ask keeps what the earlier one recorded.
        again = run_collection(
            store,
            None,
            SimulatorBackend("base"),
            personas,
            small_instrument(6),
            progress=False,
            protocol=SamplingSettings(mode="exact"),
        )
        assert again.requests == 0
        assert store.get_run(exact.run.run_id).metadata["protocols"] == ["exact-distribution"]
