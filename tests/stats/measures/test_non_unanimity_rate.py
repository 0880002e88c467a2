"""non_unanimity_rate: definition, the authors' MFQ number, exact mode, simulator truth."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from _simulated_cells import FOLLOWUPS, PAPER, simulated_run
from persona_collapse.stats.metrics import analyze_distributions, analyze_ratings
from persona_collapse.stats.registry import get_statistic, statistic_names


def test_registered_as_a_scale_free_rate() -> None:
    stat = get_statistic("non_unanimity_rate")
    assert stat.group == "instability" and stat.test_scale == "difference"
    assert "non_unanimity_rate" in statistic_names()


def test_value_on_hand_made_cells() -> None:
    # Persona 0: [1,1,1] unanimous, [2,3] not; persona 1: [4] (single: not counted), [0,0,5].
    rows = [(0, 1, 1), (0, 1, 1), (0, 1, 1), (0, 2, 2), (0, 2, 3), (1, 1, 4), (1, 2, 0),
            (1, 2, 0), (1, 2, 5)]  # fmt: skip
    pid, iid, rat = (np.array(c) for c in zip(*rows, strict=True))
    m = analyze_ratings(pid, iid, rat, foundations={1: "A", 2: "B"}, n_persona_boot=20, rng=0)
    assert m.estimate("non_unanimity_rate").value == pytest.approx(2 / 3)
    assert m.per_foundation["A"].estimate("non_unanimity_rate").value == 0.0
    assert m.per_foundation["B"].estimate("non_unanimity_rate").value == 1.0


@pytest.mark.skipif(not FOLLOWUPS.is_dir(), reason="needs ../shared/reference (absent)")
def test_gpt4o_mfq_persona_cells_match_the_authors() -> None:
    """instrument_comparison_long.csv: GPT-4o base MFQ persona cells, 0.23767 (all valid
    answers, cells with >= 2; every persona of that file is complete, so the population
    of analyze_ratings is the same)."""
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
    assert m.excluded_personas == ()
    est = m.estimate("non_unanimity_rate")
    assert est.value == pytest.approx(float(want["non_unanimity_rate"]), rel=1e-12)
    assert 0 < est.se < 0.05


def test_exact_mode_is_the_probability_of_disagreement() -> None:
    probs = np.array([[0.9, 0.1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]] * 2)
    keys = ([0, 0, 1, 1], [1, 2, 1, 2])
    m = analyze_distributions(*keys, probs, scale=range(6), foundations={1: "A", 2: "B"},
                              repetitions=3, rng=0)  # fmt: skip
    assert m.estimate("non_unanimity_rate").value == pytest.approx((1 - 0.9**3 - 0.1**3) / 2)
    unknown = analyze_distributions(*keys, probs, scale=range(6), foundations={1: "A", 2: "B"})
    assert np.isnan(unknown.estimate("non_unanimity_rate").value)


def test_recovers_the_simulators_truth() -> None:
    run = simulated_run("insecure", repetitions=10, seed=2)
    truth = float(np.mean(1.0 - (run.probs**run.repetitions).sum(axis=2)))
    est = run.metrics.estimate("non_unanimity_rate")
    assert abs(est.value - truth) < 2 * est.se, (est.value, truth, est.se)
    assert est.se < 0.1 * truth
