"""Collection and verification are paced by the same engine (one Pacer)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persona_collapse.backends.base import Backend, Generation, Prompt
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.errors import TransientBackendError
from persona_collapse.engine.pacing import Pacer
from persona_collapse.variants.verify import VerifyConfig, run_verify


class _Crowded(Backend):
    """Wraps the simulator; records requests in flight and refuses the first few as 429."""

    name = "crowded"

    def __init__(self, refuse: int = 0) -> None:
        self.inner = SimulatorBackend("base")
        self.in_flight = 0
        self.most_in_flight = 0
        self.refuse = refuse
        self.calls = 0

    async def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int,
        temperature: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> list[Generation]:
        self.calls += 1
        if self.calls <= self.refuse:
            raise TransientBackendError("429 too many requests", retry_after=0.0)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.002)
            return await self.inner.generate(
                prompts, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed
            )
        finally:
            self.in_flight -= 1


def _config(tmp_path: Path, **kwargs: Any) -> VerifyConfig:
    data: dict[str, Any] = {
        "model": "base",
        "judge_backend": "simulator",
        "judge_model": "base",
        "n_samples": 6,
        "store": tmp_path / "verify.db",
        **kwargs,
    }
    return VerifyConfig(**data)


def test_verification_respects_the_concurrency_limit(tmp_path: Path) -> None:
    backend = _Crowded()
    run_verify(_config(tmp_path, max_concurrency=2), backend=backend)
    assert 1 <= backend.most_in_flight <= 2
    assert backend.calls == 8 * 6  # every question x sample answered once


def test_verification_retries_rate_limits_through_the_pacer(tmp_path: Path) -> None:
    backend = _Crowded(refuse=3)
    outcome = run_verify(_config(tmp_path, max_concurrency=4, max_retries=5), backend=backend)
    assert backend.calls == 8 * 6 + 3
    assert outcome.result.overall.alignment.n > 0


def test_pacer_halves_its_limit_when_rate_limited() -> None:
    pacer = Pacer.create(max_concurrency=8)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientBackendError("429", retry_after=0.0)
        return "ok"

    assert asyncio.run(pacer.call(flaky)) == "ok"
    assert pacer.rate_limited == 1 and pacer.limit.current == 4
