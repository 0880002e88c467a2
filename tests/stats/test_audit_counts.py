"""The audit of count statistics: truths from the simulator's cell distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.stats.audit import AuditReport, audit_estimators, count_truth, sample_cells

SCALE = np.arange(6.0)
SMALL = {
    "replications": 40,
    "n_personas": 30,
    "n_persona_boot": 200,
    "n_rerun_boot": 40,
    "pool_size": 300,
}


def test_count_truth_is_the_closed_form_and_the_mean_of_sampled_runs() -> None:
    sim = SimulatorBackend("secure")
    probs = sim.cell_distributions([f"truth persona {k}" for k in range(200)], temperature=0.1)
    truth = count_truth(probs, SCALE, 10)
    assert truth["non_unanimity_rate"] == pytest.approx(np.mean(1 - (probs**10).sum(axis=2)))
    pooled = probs.reshape(-1, 6).mean(axis=0)
    assert truth["endpoint_mass"] == pytest.approx(pooled[0] + pooled[5])
    assert truth["top1_share"] == pytest.approx(pooled.max())
    # the expected share of non-unanimous cells: 40 sampled runs of the same personas
    rng = np.random.default_rng(8)
    rates = []
    for _ in range(40):
        values = sample_cells(probs, n_repetitions=10, scale=SCALE, rng=rng).values
        rates.append(np.mean(values.max(axis=2) != values.min(axis=2)))
    se = np.std(rates, ddof=1) / math.sqrt(len(rates))
    assert abs(np.mean(rates) - truth["non_unanimity_rate"]) < 4 * se
    # at 2 ratings it is another number
    assert count_truth(probs, SCALE, 2)["non_unanimity_rate"] < truth["non_unanimity_rate"]


@pytest.fixture(scope="module")
def report() -> AuditReport:
    return audit_estimators(presets=("base", "insecure"), rng=21, counts=True, **SMALL)


def test_count_statistics_are_audited_against_their_truth(report: AuditReport) -> None:
    row = report.estimator("base", "non_unanimity_rate")
    assert row.truth == pytest.approx(report.truth["base"]["non_unanimity_rate"])
    assert abs(row.bias) < 0.5 * row.sd  # unbiased for its truth
    assert 0.8 <= row.coverage <= 1.0 and 0 < row.coverage_mcse < 0.07
    with pytest.raises(KeyError):  # one estimator: no corrected row
        report.estimator("base", "non_unanimity_rate", "corrected")
    null = report.difference("base-rerun vs base", "non_unanimity_rate")
    assert null.truth == 0 and null.rejection_rate <= 0.2 and null.rejection_mcse >= 0
    change = report.difference("insecure vs base", "non_unanimity_rate")
    truth = (
        report.truth["insecure"]["non_unanimity_rate"] - report.truth["base"]["non_unanimity_rate"]
    )
    assert change.truth == pytest.approx(truth) and change.rejection_rate == 1.0
    foundation = report.foundation("base", "Purity/Sanctity", "entropy_bits", "reference")
    assert math.isfinite(foundation.truth) and math.isfinite(foundation.coverage)
    assert report.agreement_row("base", "non_unanimity_rate").within_se >= 0.8
    assert report.no_truth == ()


def test_moment_rows_do_not_change_with_the_count_statistics(report: AuditReport) -> None:
    without = audit_estimators(presets=("base", "insecure"), rng=21, **SMALL)
    moments = {"S", "R", "sigma_bar"}
    for field in ("estimators", "differences", "agreement", "foundations"):
        mine = [r for r in getattr(report, field) if r.metric in moments]
        assert mine == list(getattr(without, field))
    assert {m: v for m, v in report.truth["base"].items() if m in moments} == without.truth["base"]


def test_a_count_statistic_without_exact_features_has_no_truth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from _registry import POOLED_SD, WIDE_CELL_RATE, register_for_test

    register_for_test(monkeypatch, WIDE_CELL_RATE, POOLED_SD)
    small = {**SMALL, "replications": 4}
    found = audit_estimators(presets=("base", "secure"), rng=3, counts=True, **small)
    assert found.no_truth == (WIDE_CELL_RATE.name,)
    assert WIDE_CELL_RATE.name not in found.truth["base"]
    assert not [r for r in found.estimators if r.metric == WIDE_CELL_RATE.name]
    contrasts = {d.contrast for d in found.differences if d.metric == WIDE_CELL_RATE.name}
    assert contrasts == {"base-rerun vs base"}  # the null contrast only
    assert found.estimator("base", POOLED_SD.name).truth > 0  # pooled counts: exact
    assert found.to_dict()["no_truth"] == [WIDE_CELL_RATE.name]
