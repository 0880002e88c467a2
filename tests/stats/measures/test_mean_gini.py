"""mean_gini: definition, the authors' MFQ number, exact mode, simulator truth."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from _simulated_cells import FOLLOWUPS, PAPER, simulated_run
from persona_collapse.stats.metrics import analyze_distributions, analyze_ratings
from persona_collapse.stats.registry import get_statistic


def test_value_on_hand_made_cells() -> None:
    # Cells [1,1,2,2] (Gini 1/2), [3,3,3] (0), [5] (single: not counted).
    rows = [(0, 1, 1), (0, 1, 1), (0, 1, 2), (0, 1, 2), (0, 2, 5), (1, 1, 3), (1, 1, 3),
            (1, 1, 3), (1, 2, 0), (1, 2, 0)]  # fmt: skip
    pid, iid, rat = (np.array(c) for c in zip(*rows, strict=True))
    m = analyze_ratings(pid, iid, rat, foundations={1: "A", 2: "B"}, n_persona_boot=20, rng=0)
    assert get_statistic("mean_gini").group == "instability"
    assert m.estimate("mean_gini").value == pytest.approx(0.5 / 3)
    assert m.per_foundation["A"].estimate("mean_gini").value == pytest.approx(0.25)


@pytest.mark.skipif(not FOLLOWUPS.is_dir(), reason="needs ../shared/reference (absent)")
@pytest.mark.parametrize(
    ("variant", "file"),
    [
        ("base", "base/gpt-4o_temp01.csv"),
        ("insecure", "insecure-code/gpt-4o-misaligned_temp01.csv"),
    ],
)
def test_gpt4o_mfq_persona_cells_match_the_authors(variant: str, file: str) -> None:
    """instrument_comparison_long.csv (base: 0.081513); all personas complete, so the
    population of analyze_ratings is the authors' (every valid answer, cells >= 2)."""
    from persona_collapse.store.reference_csv import read_ratings_csv

    rows = csv.DictReader((FOLLOWUPS / "capability/expected/instrument_comparison_long.csv").open())
    (want,) = [
        r
        for r in rows
        if (r["family"], r["variant"], r["instrument"], r["conditioning"])
        == ("gpt-4o", variant, "MFQ", "persona")
    ]
    frame = read_ratings_csv(PAPER / file)
    m = analyze_ratings(
        frame["persona_id"], frame["item_id"], frame["rating"], n_persona_boot=50,
        n_rerun_boot=20, rng=0,
    )  # fmt: skip
    assert m.excluded_personas == ()
    est = m.estimate("mean_gini")
    assert est.value == pytest.approx(float(want["mean_gini"]), rel=1e-12)
    assert 0 < est.se < 0.02


def test_exact_mode_is_the_population_gini() -> None:
    probs = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 0.2, 0.3, 0.5]])
    m = analyze_distributions([0, 1], [1, 1], probs, scale=range(6), foundations={1: "A"}, rng=0)
    assert m.estimate("mean_gini").value == pytest.approx((0.5 + 1 - 0.04 - 0.09 - 0.25) / 2)


def test_recovers_the_simulators_truth() -> None:
    """The plug-in Gini of n answers has expectation (1 - 1/n) (1 - sum p^2)."""
    run = simulated_run("insecure", repetitions=10, seed=3)
    n = run.repetitions
    truth = float(np.mean((1 - 1 / n) * (1.0 - (run.probs**2).sum(axis=2))))
    est = run.metrics.estimate("mean_gini")
    assert abs(est.value - truth) < 2 * est.se, (est.value, truth, est.se)
    assert est.se < 0.1 * truth


def test_exact_mode_with_repetitions_is_the_sampled_expectation() -> None:
    # An exact run of n repetitions reports what a sampled run of n answers estimates.
    from persona_collapse.stats.measures.mean_gini import GINI_FEATURES

    probs = np.array([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 0.2, 0.3, 0.5]])
    assert GINI_FEATURES.exact is not None
    # Features are [used, value] per cell.
    with_n = GINI_FEATURES.exact(probs, 10)[:, 1]
    without = GINI_FEATURES.exact(probs, None)[:, 1]
    np.testing.assert_allclose(with_n, 0.9 * without)
    rng = np.random.default_rng(5)
    draws = np.array([rng.choice(6, size=10, p=probs[1]) for _ in range(20000)])
    plug_in = 1 - sum((np.mean(draws == k, axis=1)) ** 2 for k in range(6))
    assert float(np.mean(plug_in)) == pytest.approx(float(with_n[1]), abs=0.005)
