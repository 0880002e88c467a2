"""A statistic added to the registry reaches significance, audit, planning and compare."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _registry import SPREAD_MINUS_NOISE, SPREAD_TO_NOISE, register_for_test
from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.stats.audit import audit_estimators, sample_cells
from persona_collapse.stats.planning import plan_design, variance_models
from persona_collapse.stats.significance import (
    OVERALL,
    RunCells,
    cells_from_cell_ratings,
    family_significance,
    names_tested,
    study_significance,
)

NEW = (SPREAD_TO_NOISE.name, SPREAD_MINUS_NOISE.name)


def _family(seed: int) -> dict[str, RunCells]:
    rng = np.random.default_rng(seed)
    personas = [f"registry persona {k}" for k in range(30)]
    out = {}
    for preset in ("base", "secure", "insecure"):
        probs = SimulatorBackend(preset).cell_distributions(personas, temperature=0.1)
        cells = sample_cells(probs, n_repetitions=4, scale=np.arange(6.0), rng=rng)
        out[preset] = cells_from_cell_ratings(cells)
    return out


def test_tests_cover_new_statistics_on_their_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _family(1)
    before = family_significance(runs, n_boot=60, n_rerun_boot=10, rng=5)
    register_for_test(monkeypatch)
    assert names_tested()[-2:] == NEW
    fam = family_significance(runs, n_boot=60, n_rerun_boot=10, rng=5)
    est = fam.estimates
    for key in ("insecure", "excess"):
        for name in NEW:
            assert set(fam.contrasts[key].tests[name]) == set(fam.contrasts[key].tests["S"])
            t = fam.test(key, name)
            assert 0 <= t.p_value <= t.p_holm <= 1
    ratio = fam.test("insecure", SPREAD_TO_NOISE.name)
    assert ratio.estimate == pytest.approx(
        est["insecure"][OVERALL].spread_to_noise / est["base"][OVERALL].spread_to_noise - 1
    )
    gap = fam.test("insecure", SPREAD_MINUS_NOISE.name)
    diff = est["insecure"][OVERALL].spread_minus_noise - est["base"][OVERALL].spread_minus_noise
    assert gap.estimate == pytest.approx(diff)
    assert gap.ci_low < gap.estimate < gap.ci_high
    excess = fam.test("excess", SPREAD_MINUS_NOISE.name)
    x_t, x_c = (est[k][OVERALL].spread_minus_noise for k in ("insecure", "secure"))
    assert excess.estimate == pytest.approx(x_t - x_c)
    assert est["base"][OVERALL].spread_minus_noise_se > 0
    # S, R and sigma_bar keep their numbers: Holm runs per statistic, not across them.
    for key, contrast in before.contrasts.items():
        for name, by_scope in contrast.tests.items():
            for scope, t in by_scope.items():
                assert fam.test(key, name, scope) == t
    # The corrected estimator has no form for them: they are left out, S stays.
    corrected = family_significance(runs, estimator="corrected", n_boot=30, rng=5)
    assert "S" in corrected.contrasts["insecure"].tests
    assert not set(NEW) & set(corrected.contrasts["insecure"].tests)


def test_study_holm_counts_each_statistic_separately(monkeypatch: pytest.MonkeyPatch) -> None:
    register_for_test(monkeypatch)
    study = study_significance({"a": _family(2), "b": _family(3)}, n_boot=40, rng=1)
    rows = study.rows()
    assert {r["metric"] for r in rows} >= {*NEW, "S", "R", "sigma_bar"}
    for name in NEW:
        p = [r["p_value"] for r in rows if r["metric"] == name and r["contrast"] == "insecure"]
        assert len(p) == 2 * 6  # two families x (overall + five foundations)


def test_audit_and_planning_include_new_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    register_for_test(monkeypatch)
    report = audit_estimators(
        presets=("base", "insecure"),
        replications=3,
        n_personas=12,
        n_persona_boot=20,
        n_rerun_boot=5,
        pool_size=40,
        rng=3,
    )
    for name in NEW:
        assert name in report.truth["base"]
        assert report.estimator("base", name).replications == 3
        row = report.difference("insecure vs base", name)
        assert math.isfinite(row.mean)
        assert report.agreement_row("insecure", name).replications == 3
    with pytest.raises(KeyError):
        report.estimator("base", NEW[0], "corrected")  # no corrected estimator
    gap_truth = report.truth["insecure"][SPREAD_MINUS_NOISE.name]
    base_gap = report.truth["base"][SPREAD_MINUS_NOISE.name]
    assert report.difference("insecure vs base", SPREAD_MINUS_NOISE.name).truth == pytest.approx(
        gap_truth - base_gap
    )

    pilot = _family(4)["base"]
    models = variance_models(pilot, n_boot=40, n_rerun_boot=20, rng=2)
    assert set(NEW) <= set(models)
    plan = plan_design(models[SPREAD_MINUS_NOISE.name], change=0.2, prompt_tokens=100.0)
    assert plan.metric == SPREAD_MINUS_NOISE.name
    assert all(0 <= p.power <= 1 for p in plan.points)
