"""Difference tests of the count statistics: every registered statistic is tested.

A count statistic declared only in the registry (``features`` and ``combine``) reaches
:func:`family_significance`, :func:`study_significance` and the rows of
``significance.csv`` with its own test scale, Holm per statistic across the study, and
leaves the numbers of S, σ̄ and R untouched.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from _registry import COUNT_TEST_STATISTICS, POOLED_SD, WIDE_CELL_RATE, register_for_test
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.instrument import mfq30
from persona_collapse.stats.audit import sample_cells
from persona_collapse.stats.metrics import CellRatings, foundation_columns
from persona_collapse.stats.significance import (
    EXCESS,
    OVERALL,
    RunCells,
    cells_from_cell_ratings,
    cells_from_distributions,
    count_statistics_tested,
    family_significance,
    holm,
    is_log_scale,
    study_significance,
)
from persona_collapse.study.analysis import significance_rows

SCALE = np.arange(6.0)
NEW = (WIDE_CELL_RATE.name, POOLED_SD.name)
MOMENT = ("S", "R", "sigma_bar")


def _cells(preset: str, seed: int, personas: int = 30, reps: int = 5) -> CellRatings:
    probs = SimulatorBackend(preset).cell_distributions(
        [f"count persona {k}" for k in range(personas)], temperature=0.7
    )
    return sample_cells(probs, n_repetitions=reps, scale=SCALE, rng=np.random.default_rng(seed))


def _family(seed: int) -> dict[str, RunCells]:
    return {
        p: cells_from_cell_ratings(_cells(p, seed + k))
        for k, p in enumerate(("base", "secure", "insecure"))
    }


def _wide_rate(cells: CellRatings, cols: np.ndarray | slice = slice(None)) -> float:
    """The test statistic computed by hand from the ratings (every cell has 5 ratings)."""
    values = cells.values[:, cols]
    span = np.nanmax(values, axis=2) - np.nanmin(values, axis=2)
    return float(np.mean(span >= 2))


def _pooled_sd(cells: CellRatings) -> float:
    values = cells.values[~np.isnan(cells.values)]
    return float(np.std(values))


def test_count_statistics_are_tested_on_their_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {p: _cells(p, 10 + k) for k, p in enumerate(("base", "secure", "insecure"))}
    runs = {p: cells_from_cell_ratings(c) for p, c in raw.items()}
    before = family_significance(runs, n_boot=200, n_rerun_boot=40, rng=5)
    register_for_test(monkeypatch, *COUNT_TEST_STATISTICS)
    assert {st.name for st in count_statistics_tested()} >= set(NEW)
    assert not is_log_scale(WIDE_CELL_RATE.name) and is_log_scale(POOLED_SD.name)
    fam = family_significance(runs, n_boot=200, n_rerun_boot=40, rng=5)

    # S, R and sigma_bar keep every number (the same draws; Holm per statistic).
    for key, contrast in before.contrasts.items():
        for name, by_scope in contrast.tests.items():
            for scope, t in by_scope.items():
                if name in MOMENT:
                    assert fam.test(key, name, scope) == t

    est = fam.estimates
    first = runs["base"]
    scopes = {
        OVERALL: np.arange(len(first.item_ids)),
        **foundation_columns(first.item_ids, first.foundations),
    }
    assert len(scopes) == 6
    for run, cells in raw.items():
        for scope, cols in scopes.items():
            assert est[run][scope][WIDE_CELL_RATE.name].value == pytest.approx(
                _wide_rate(cells, cols), rel=1e-12
            )
        assert est[run][OVERALL][POOLED_SD.name].value == pytest.approx(_pooled_sd(cells))
        assert est[run][OVERALL][WIDE_CELL_RATE.name].se > 0

    for key in ("secure", "insecure", EXCESS):
        for name in NEW:
            assert set(fam.contrasts[key].tests[name]) == set(fam.contrasts[key].tests["S"])
    wide = fam.test("insecure", WIDE_CELL_RATE.name)
    assert wide.estimate == pytest.approx(_wide_rate(raw["insecure"]) - _wide_rate(raw["base"]))
    assert wide.ci_low < wide.estimate < wide.ci_high
    assert wide.se_persona > 0 and wide.se_rerun > 0
    assert 0 <= wide.p_value <= wide.p_holm <= 1
    sd = fam.test("insecure", POOLED_SD.name)  # log scale: a relative change
    assert sd.estimate == pytest.approx(_pooled_sd(raw["insecure"]) / _pooled_sd(raw["base"]) - 1)
    assert sd.z == pytest.approx(math.log1p(sd.estimate) / sd.se)
    excess = fam.test(EXCESS, WIDE_CELL_RATE.name)
    assert excess.estimate == pytest.approx(_wide_rate(raw["insecure"]) - _wide_rate(raw["secure"]))
    # The built-in count statistics are tested alike.
    for name in ("non_unanimity_rate", "mean_gini_norm", "entropy_bits", "top1_share"):
        assert math.isfinite(fam.test("insecure", name).p_value)
    # One estimator for count statistics: the corrected results carry the same test,
    # verdicts rest on it, and no "_corrected" keys are made up for it.
    assert fam.corrected is not None
    assert fam.corrected.test("insecure", WIDE_CELL_RATE.name).p_value == pytest.approx(
        wide.p_value, rel=1e-9
    )
    assert fam.verdict("insecure", WIDE_CELL_RATE.name) is wide
    both = fam.both_estimates()["base"][OVERALL]
    assert WIDE_CELL_RATE.name in both and f"{WIDE_CELL_RATE.name}_corrected" not in both
    assert "S_corrected" in both


def test_paired_draws_pair_the_count_statistics() -> None:
    """Paired: the same personas in every replicate, so two identical runs differ by 0
    in every draw (p = 1) while the runs' own SEs are positive."""
    cells = _cells("insecure", 3)
    runs = {"base": cells_from_cell_ratings(cells), "copy": cells_from_cell_ratings(cells)}
    fam = family_significance(runs, n_boot=100, n_rerun_boot=0, rng=2, control=None)
    t = fam.test("copy", "non_unanimity_rate")
    assert (t.estimate, t.se_persona, t.p_value) == (0.0, 0.0, 1.0)
    assert fam.estimates["base"][OVERALL]["non_unanimity_rate"].se > 0
    unpaired = family_significance(runs, n_boot=100, paired=False, rng=2, control=None)
    assert unpaired.test("copy", "non_unanimity_rate").se_persona > 0


def test_exact_runs_get_count_statistics_from_their_distributions() -> None:
    items = [it.id for it in mfq30(include_catch=True).items]
    rng = np.random.default_rng(4)
    runs, truth = {}, {}
    for label, concentration in (("base", 5.0), ("variant", 0.5)):
        probs = rng.dirichlet(np.full(6, concentration), size=(20, len(items)))
        truth[label] = float(np.mean(1 - (probs**10).sum(axis=2)))
        runs[label] = cells_from_distributions(
            np.repeat(np.arange(20), len(items)),
            np.tile(items, 20),
            probs.reshape(-1, 6),
            scale=SCALE,
            repetitions=10,
        )
    fam = family_significance(runs, n_boot=100, n_rerun_boot=20, rng=1, control=None)
    t = fam.test("variant", "non_unanimity_rate")
    # Per cell, the chance that 10 draws are not all equal: 1 - sum p**10 (sparse
    # Dirichlet(0.5) distributions are peaked, so it falls).
    assert t.estimate == pytest.approx(truth["variant"] - truth["base"], rel=1e-12)
    assert t.estimate < 0 and t.p_value < 0.001
    assert t.se_rerun == 0  # an exact run has no rerun noise
    assert fam.test("variant", "mean_gini").estimate < 0


def test_study_holm_and_significance_rows_cover_a_new_count_statistic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register_for_test(monkeypatch, WIDE_CELL_RATE)
    study = study_significance({"a": _family(20), "b": _family(30)}, n_boot=100, rng=1)
    tests = [
        t
        for fam in study.families.values()
        for t in fam.contrasts["insecure"].tests[WIDE_CELL_RATE.name].values()
    ]
    assert len(tests) == 2 * 6  # two families x (overall + five foundations)
    expected = holm([t.p_value for t in tests])
    assert [t.p_holm for t in tests] == pytest.approx(list(expected))
    labels = {f: {k: k for k in ("base", "secure", "insecure", EXCESS)} for f in ("a", "b")}
    rows = significance_rows(study, labels, 0.05)
    found = [r for r in rows if r["metric"] == WIDE_CELL_RATE.name]
    assert {r["contrast"] for r in found} == {"secure", "insecure", EXCESS}
    assert all(0 <= r["p_holm"] <= 1 for r in found)
