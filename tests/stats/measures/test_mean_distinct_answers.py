"""mean_distinct_answers: definition, exact mode, simulator truth."""

from __future__ import annotations

import numpy as np
import pytest

from _simulated_cells import simulated_run
from persona_collapse.stats.metrics import analyze_distributions, analyze_ratings


def test_value_on_hand_made_cells() -> None:
    # Cells [1,2,3] (3), [4,4] (1), [0] (single: not counted).
    rows = [(0, 1, 1), (0, 1, 2), (0, 1, 3), (0, 2, 0), (1, 1, 4), (1, 1, 4), (1, 2, 5),
            (1, 2, 5)]  # fmt: skip
    pid, iid, rat = (np.array(c) for c in zip(*rows, strict=True))
    m = analyze_ratings(pid, iid, rat, foundations={1: "A", 2: "B"}, n_persona_boot=20, rng=0)
    assert m.estimate("mean_distinct_answers").value == pytest.approx(5 / 3)
    assert m.per_foundation["A"].estimate("mean_distinct_answers").value == pytest.approx(2.0)


def test_exact_mode_is_the_expected_count() -> None:
    probs = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]])
    m = analyze_distributions([0, 1], [1, 1], probs, scale=range(6), foundations={1: "A"},
                              repetitions=2, rng=0)  # fmt: skip
    assert m.estimate("mean_distinct_answers").value == pytest.approx((1.5 + 1.0) / 2)
    plain = analyze_distributions([0, 1], [1, 1], probs, scale=range(6), foundations={1: "A"})
    assert np.isnan(plain.estimate("mean_distinct_answers").value)


def test_recovers_the_simulators_truth() -> None:
    run = simulated_run("insecure", repetitions=10, seed=4)
    truth = float(np.mean((1.0 - (1.0 - run.probs) ** run.repetitions).sum(axis=2)))
    est = run.metrics.estimate("mean_distinct_answers")
    assert abs(est.value - truth) < 2 * est.se, (est.value, truth, est.se)
