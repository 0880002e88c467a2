"""Power and budget planning: the variance model against simulation, power, requests, costs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.engine.costs import ModelPrices
from persona_collapse.stats.audit import sample_cells
from persona_collapse.stats.planning import (
    VarianceModel,
    expected_requests_per_cell,
    pilot_from_preset,
    plan_design,
    power_of,
    prompt_tokens_per_request,
    variance_models,
)
from persona_collapse.stats.significance import cells_from_cell_ratings

SCALE = np.arange(6.0)


@pytest.fixture(scope="module")
def models() -> dict[str, VarianceModel]:
    return variance_models(pilot_from_preset("base", n_personas=400, rng=1), rng=2)


def test_variance_model_predicts_simulated_spread(models: dict[str, VarianceModel]) -> None:
    """Predicted sd of log S and log sigma_bar at other designs matches 150 simulated runs."""
    sim = SimulatorBackend("base")
    pool = sim.cell_distributions([f"plan check {k}" for k in range(2000)], temperature=0.1)
    rng = np.random.default_rng(3)
    for personas, reps in ((50, 4), (30, 20)):
        log_s, log_sb = [], []
        for _ in range(150):
            chosen = rng.choice(len(pool), size=personas, replace=False)
            cells = cells_from_cell_ratings(
                sample_cells(pool[chosen], n_repetitions=reps, scale=SCALE, rng=rng)
            )
            log_s.append(math.log(np.std(cells.mu, axis=0, ddof=1).mean()))
            log_sb.append(math.log(cells.sigma.mean()))
        assert math.sqrt(models["S"].variance(personas, reps)) == pytest.approx(
            np.std(log_s, ddof=1), rel=0.2
        )
        assert math.sqrt(models["sigma_bar"].variance(personas, reps)) == pytest.approx(
            np.std(log_sb, ddof=1), rel=0.2
        )


def test_variance_model_structure(models: dict[str, VarianceModel]) -> None:
    s, sb, r = models["S"], models["sigma_bar"], models["R"]
    assert s.pilot_personas == 400 and s.pilot_repetitions == 10
    assert s.between > 0 and s.within > 0 and sb.within > 0
    assert (r.between, r.within) == (sb.between, sb.within)
    assert r.value == pytest.approx(1 / sb.value)
    # more personas or more ratings never hurt; exact mode has no rating noise
    assert s.variance(200, 10) == pytest.approx(s.variance(100, 10) / 2)
    assert sb.variance(100, 3) > sb.variance(100, 10) > sb.variance(100, None)
    assert sb.variance(100, None) == pytest.approx(sb.between / 100)
    with pytest.raises(ValueError, match="repetitions"):
        sb.variance(100, 1)
    with pytest.raises(ValueError, match="personas"):
        sb.variance(1, 10)


def test_power_of() -> None:
    z = 1.959963984540054
    # a shift of z + 0.8416 standard errors gives 80 % power
    se = abs(math.log(0.8)) / (z + 0.8416212335729143)
    assert power_of(-0.2, se, 0.05) == pytest.approx(0.8, abs=1e-4)
    assert power_of(0.25, se, 0.05) == pytest.approx(0.8, abs=1e-4)  # log(1.25) = -log(0.8)
    assert power_of(-0.2, se / 2, 0.05) > 0.99
    assert power_of(1e-9, se, 0.05) == pytest.approx(0.05, abs=1e-4)
    assert math.isnan(power_of(-0.2, math.nan, 0.05))
    with pytest.raises(ValueError, match="change"):
        power_of(-1.0, se, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        power_of(-0.2, se, 1.0)


def test_expected_requests_per_cell() -> None:
    assert expected_requests_per_cell(10, 0.0) == 1.0
    u, n = 0.02, 10
    second_round = 1 - (1 - u) ** n
    third_round = 1 - (1 - u**2) ** n
    assert expected_requests_per_cell(n, u) == pytest.approx(
        1 + second_round + third_round, rel=1e-4
    )
    assert expected_requests_per_cell(2, 0.1) < expected_requests_per_cell(20, 0.1)
    with pytest.raises(ValueError, match="unparseable_rate"):
        expected_requests_per_cell(10, 1.0)


def test_plan_grid_requests_tokens_and_cost(models: dict[str, VarianceModel]) -> None:
    prices = ModelPrices(input=2.0, output=8.0)
    plan = plan_design(
        models["R"],
        change=-0.2,
        personas=(50, 100, 200),
        repetitions=(2, 5, 10),
        prompt_tokens=200.0,
        unparseable_rate=0.0,
        prices=prices,
        pilot="base preset",
    )
    assert len(plan.points) == 3 * 3 + 3
    point = next(
        p for p in plan.points if (p.mode, p.personas, p.repetitions) == ("sampling", 100, 10)
    )
    assert point.requests == 3000 and point.requests_without_n == 30_000
    assert point.prompt_tokens == 600_000 and point.completion_tokens == 30_000
    assert point.cost_usd == pytest.approx((600_000 * 2.0 + 30_000 * 8.0) / 1e6)
    exact = next(p for p in plan.points if (p.mode, p.personas) == ("exact", 100))
    assert (exact.requests, exact.completion_tokens, exact.repetitions) == (3000, 3000, 1)
    assert exact.power >= point.power  # no rating noise
    for mode in ("sampling", "exact"):
        best = plan.cheapest(mode)  # type: ignore[arg-type]
        assert best is not None and best.reaches_target and best.power >= 0.8
        cheaper = [
            p
            for p in plan.points
            if p.mode == mode and p.cost_usd is not None and p.cost_usd < (best.cost_usd or 0)
        ]
        assert all(not p.reaches_target for p in cheaper)
    data = plan.to_dict()
    assert data["cheapest"]["sampling"]["reaches_target"] is True
    assert data["prices"] == {"input": 2.0, "output": 8.0, "cached_input": None}


def test_plan_powers_grow_with_personas(models: dict[str, VarianceModel]) -> None:
    plan = plan_design(models["S"], change=0.1, prompt_tokens=100.0)
    powers = [p.power for p in plan.points if p.mode == "sampling" and p.repetitions == 10]
    assert powers == sorted(powers)
    correlated = plan_design(models["S"], change=0.1, prompt_tokens=100.0, correlation=0.5)
    assert correlated.points[0].power > plan.points[0].power
    assert plan.cheapest("sampling") is None or plan.cheapest("sampling").power >= 0.8  # type: ignore[union-attr]


def test_plan_validation(models: dict[str, VarianceModel]) -> None:
    with pytest.raises(ValueError, match="power"):
        plan_design(models["S"], change=0.1, power=1.2, prompt_tokens=1.0)
    with pytest.raises(ValueError, match="repetitions"):
        plan_design(models["S"], change=0.1, repetitions=(1, 2), prompt_tokens=1.0)
    with pytest.raises(ValueError, match="correlation"):
        plan_design(models["S"], change=0.1, correlation=1.0, prompt_tokens=1.0)
    with pytest.raises(ValueError, match="change"):
        plan_design(models["S"], change=-1.5, prompt_tokens=1.0)


def test_prompt_tokens_estimate() -> None:
    tokens = prompt_tokens_per_request(personas=["A retired sailor from Lisbon."])
    assert 50 < tokens < 600
    longer = prompt_tokens_per_request(personas=["A retired sailor from Lisbon. " * 20])
    assert longer > tokens


def test_variance_models_need_a_sampled_pilot() -> None:
    sim = SimulatorBackend("base")
    probs = sim.cell_distributions(["x", "y", "z"], temperature=0.1)
    single = cells_from_cell_ratings(
        sample_cells(probs, n_repetitions=1, scale=SCALE, rng=np.random.default_rng(0))
    )
    with pytest.raises(ValueError, match="at least 2 ratings"):
        variance_models(single)
