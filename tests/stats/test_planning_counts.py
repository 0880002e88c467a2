"""Power planning for count statistics: the variance model against simulated runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.stats.audit import sample_cells
from persona_collapse.stats.planning import (
    VarianceModel,
    pilot_from_preset,
    plan_design,
    variance_models,
)

SCALE = np.arange(6.0)
GRID = (2, 3, 5, 10, 20)


@pytest.fixture(scope="module")
def models() -> dict[str, VarianceModel]:
    pilot = pilot_from_preset("base", n_personas=400, n_repetitions=20, rng=11)
    return variance_models(pilot, rng=12, repetitions=GRID, n_boot=1000, n_rerun_boot=200)


def _simulated_sd(personas: int, reps: int, runs: int, seed: int) -> float:
    """Sd over simulated runs of the non-unanimity rate (computed here from the ratings)."""
    sim = SimulatorBackend("base")
    pool = sim.cell_distributions([f"plan check {k}" for k in range(2000)], temperature=0.1)
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(runs):
        chosen = rng.choice(len(pool), size=personas, replace=False)
        values = sample_cells(pool[chosen], n_repetitions=reps, scale=SCALE, rng=rng).values
        rates.append(float(np.mean(values.max(axis=2) != values.min(axis=2))))
    return float(np.std(rates, ddof=1))


def test_every_count_statistic_gets_a_model(models: dict[str, VarianceModel]) -> None:
    model = models["non_unanimity_rate"]
    assert model.pilot_repetitions == 20 and model.pilot_personas == 400
    # refitted below the pilot's 20 ratings: fewer ratings, fewer disagreeing cells
    assert [fit[0] for fit in model.by_repetitions] == [2, 3, 5, 10]
    values = [fit[3] for fit in model.by_repetitions] + [model.value]
    assert values == sorted(values) and values[0] < 0.8 * values[-1]
    for name in ("S", "R", "sigma_bar", "mean_gini", "entropy_bits", "top1_share"):
        assert name in models
    assert math.isfinite(models["entropy_bits"].variance(100, 7))


def test_plan_for_non_unanimity_predicts_the_simulated_se(
    models: dict[str, VarianceModel],
) -> None:
    """The cheapest design's predicted SE, and that of designs at other repetitions,
    match the sd of the non-unanimity rate over 200 simulated runs of the design."""
    plan = plan_design(
        models["non_unanimity_rate"], change=-0.05, repetitions=GRID, prompt_tokens=200.0
    )
    best = plan.cheapest("sampling")
    assert best is not None and math.isfinite(best.se_log) and best.power >= 0.8
    designs = {(best.personas, best.repetitions), (50, 10), (100, 3)}
    for k, (personas, reps) in enumerate(sorted(designs)):
        predicted = math.sqrt(models["non_unanimity_rate"].variance(personas, reps))
        measured = _simulated_sd(personas, reps, runs=200, seed=30 + k)
        assert predicted == pytest.approx(measured, rel=0.2), (personas, reps)


def test_a_test_only_count_statistic_reaches_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from _registry import POOLED_SD, WIDE_CELL_RATE, register_for_test

    register_for_test(monkeypatch, WIDE_CELL_RATE, POOLED_SD)
    pilot = pilot_from_preset("base", n_personas=60, n_repetitions=5, rng=3)
    fitted = variance_models(pilot, rng=4, repetitions=(3, 5), n_boot=200, n_rerun_boot=50)
    wide, pooled = fitted[WIDE_CELL_RATE.name], fitted[POOLED_SD.name]
    assert wide.between > 0 and [fit[0] for fit in wide.by_repetitions] == [3]
    plan = plan_design(wide, change=0.05, repetitions=(3, 5), prompt_tokens=200.0)
    assert plan.metric == WIDE_CELL_RATE.name and all(math.isfinite(p.se_log) for p in plan.points)
    # log scale: the variance of log(sd) is about that of sd over sd squared
    assert plan_design(pooled, change=-0.2, prompt_tokens=200.0).points[0].power > 0
