"""mean_gini_norm: Gini over its maximum 1 - 1/k, the authors' MFQ number."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from _simulated_cells import FOLLOWUPS, PAPER
from persona_collapse.stats.metrics import analyze_distributions, analyze_ratings


def test_uniform_cells_score_one_on_any_scale() -> None:
    for scale in (range(6), range(1, 6)):
        k = len(scale)
        probs = np.full((2, k), 1 / k)
        m = analyze_distributions([0, 1], [1, 1], probs, scale=scale, foundations={1: "A"}, rng=0)
        assert m.estimate("mean_gini_norm").value == pytest.approx(1.0)
        assert m.estimate("mean_gini").value == pytest.approx(1 - 1 / k)


def test_sampled_cells_use_the_given_scale() -> None:
    # Two cells [1, 2] (Gini 1/2) on a 1-5 scale: 0.5 / 0.8.
    pid, iid, rat = np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1]), np.array([1, 2, 1, 2])
    m = analyze_ratings(pid, iid, rat, foundations={1: "A"}, scale=range(1, 6), rng=0,
                        n_persona_boot=10)  # fmt: skip
    assert m.estimate("mean_gini_norm").value == pytest.approx(0.5 / 0.8)


@pytest.mark.skipif(not FOLLOWUPS.is_dir(), reason="needs ../shared/reference (absent)")
def test_gpt4o_mfq_persona_cells_match_the_authors() -> None:
    """instrument_comparison_long.csv, GPT-4o base MFQ persona cells: 0.097816 (k = 6)."""
    from persona_collapse.store.reference_csv import read_ratings_csv

    rows = csv.DictReader((FOLLOWUPS / "capability/expected/instrument_comparison_long.csv").open())
    (want,) = [
        r
        for r in rows
        if (r["family"], r["variant"], r["instrument"], r["conditioning"])
        == ("gpt-4o", "base", "MFQ", "persona")
    ]
    frame = read_ratings_csv(PAPER / "base/gpt-4o_temp01.csv")
    m = analyze_ratings(
        frame["persona_id"], frame["item_id"], frame["rating"], n_persona_boot=50,
        n_rerun_boot=20, rng=0,
    )  # fmt: skip
    est = m.estimate("mean_gini_norm")
    assert est.value == pytest.approx(float(want["mean_gini_norm"]), rel=1e-12)
    assert est.se == pytest.approx(m.estimate("mean_gini").se / (1 - 1 / 6), rel=1e-9)
