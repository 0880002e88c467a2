"""entropy_bits of the pooled rating distribution: definition, the authors' trajectory
endpoints, exact mode, simulator truth."""

from __future__ import annotations

import numpy as np
import pytest

from _simulated_cells import DEEPSEEK_ENDPOINTS, FOLLOWUPS, deepseek_endpoint, simulated_run
from persona_collapse.stats.metrics import analyze_distributions, analyze_ratings

STAT = "entropy_bits"


def test_value_on_hand_made_ratings() -> None:
    # Pooled ratings 5, 5, 5, 0, 2, 5 over the 0-5 scale.
    pid, iid = np.array([0, 0, 0, 1, 1, 1]), np.array([1, 1, 2, 1, 2, 2])
    rat = np.array([5, 5, 5, 0, 2, 5])
    m = analyze_ratings(pid, iid, rat, foundations={1: "A", 2: "B"}, n_persona_boot=20, rng=0)
    p = np.array([1, 1, 4]) / 6
    assert m.estimate("entropy_bits").value == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert STAT in m.per_foundation["A"].estimates


@pytest.mark.skipif(not FOLLOWUPS.is_dir(), reason="needs ../shared/reference (absent)")
@pytest.mark.parametrize(("step", "file"), DEEPSEEK_ENDPOINTS)
def test_deepseek_trajectory_endpoints_match_the_authors(step: int, file: str) -> None:
    m, want = deepseek_endpoint(step, file)
    est = m.estimate(STAT)
    assert est.value == pytest.approx(float(want[STAT]), rel=1e-12)
    assert 0 < est.se < 0.05


def test_exact_mode_pools_the_mean_distribution() -> None:
    probs = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 0.1, 0.2, 0.7]])
    m = analyze_distributions([0, 1], [1, 1], probs, scale=range(6), foundations={1: "A"}, rng=0)
    mix = probs.mean(axis=0)
    assert m.estimate(STAT).value == pytest.approx(
        float(-(mix[mix > 0] * np.log2(mix[mix > 0])).sum())
    )


def test_recovers_the_simulators_truth() -> None:
    run = simulated_run("insecure", repetitions=10, seed=5)
    pooled = run.probs.mean(axis=(0, 1))
    truth = float(-(pooled[pooled > 0] * np.log2(pooled[pooled > 0])).sum())
    est = run.metrics.estimate(STAT)
    assert abs(est.value - truth) < 2 * est.se, (est.value, truth, est.se)
