"""The estimator audit on the simulator: bias, coverage, test size and power.

One audit at the study protocol's size (100 personas x 10 ratings, T = 0.1,
200 replications per preset; fewer bootstrap draws than the default to stay
fast) is shared by the tests.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from persona_collapse.backends.simulator import SimulatorBackend
from persona_collapse.core.errors import UnknownNameError
from persona_collapse.stats.audit import AuditReport, audit_estimators, sample_cells

PRESETS = ("base", "secure", "insecure")
METRICS = ("S", "sigma_bar", "R")
POOL = 3000


@pytest.fixture(scope="module")
def report() -> AuditReport:
    return audit_estimators(
        replications=200, n_persona_boot=300, n_rerun_boot=100, pool_size=POOL, rng=2026
    )


def test_settings_and_truth_come_from_the_simulator(report: AuditReport) -> None:
    assert report.presets == PRESETS
    assert (report.replications, report.n_personas, report.n_repetitions) == (200, 100, 10)
    assert report.temperature == 0.1 and report.seed == 2026
    truth = SimulatorBackend("base").true_metrics(
        [f"audit persona {k}" for k in range(POOL)], temperature=0.1
    )
    assert report.truth["base"]["S"] == pytest.approx(truth.S, rel=1e-12)
    assert report.truth["base"]["sigma_bar"] == pytest.approx(truth.sigma_bar, rel=1e-12)
    assert len(report.estimators) == 3 * 3 * 2
    json.dumps(report.to_dict())  # plain data


def test_corrected_estimators_are_unbiased_and_cover(report: AuditReport) -> None:
    coverages = []
    for preset in PRESETS:
        for metric in METRICS:
            row = report.estimator(preset, metric, "corrected")
            assert abs(row.relative_bias) < 0.015, row
            assert 0.90 <= row.coverage <= 0.99, row
            assert row.mean_se == pytest.approx(row.sd, rel=0.15), row
            coverages.append(row.coverage)
    # 200 replications give each coverage a Monte Carlo sd of 1.5 points; their mean is tighter.
    assert 0.93 <= float(np.mean(coverages)) <= 0.97


def test_per_foundation_rows_cover_each_foundation(report: AuditReport) -> None:
    # 5 foundations x 3 presets x 3 statistics x 2 estimators, truth from the pool's items
    assert len(report.foundations) == 5 * 3 * 3 * 2
    scopes = {row.scope for row in report.foundations}
    assert len(scopes) == 5 and "overall" not in scopes
    coverages = []
    for preset in PRESETS:
        for scope in scopes:
            row = report.foundation(preset, scope, "S", "corrected")
            assert abs(row.relative_bias) < 0.02, row
            assert 0.88 <= row.coverage <= 1.0, row
            coverages.append(row.coverage)
            # a foundation's truth differs from the overall one (6 of 30 items)
            assert row.truth != report.truth[preset]["S"]
    # jackknife-t with kurtosis-adjusted df: mean coverage near 95 % (MC sd 0.4 points)
    assert 0.93 <= float(np.mean(coverages)) <= 0.975
    data = report.to_dict()
    assert len(data["foundations"]) == len(report.foundations)
    assert data["foundations"][0]["coverage_mcse"] > 0


def test_reference_estimators_show_their_documented_bias(report: AuditReport) -> None:
    for preset in PRESETS:
        # The sample sd of 10 ratings underestimates the cell sd ...
        assert report.estimator(preset, "sigma_bar").relative_bias < -0.02
        assert report.estimator(preset, "R").relative_bias > 0.02
        # ... and noise in the cell means inflates S.
        assert report.estimator(preset, "S").relative_bias > 0.005
    insecure_s = report.estimator("insecure", "S")
    assert insecure_s.relative_bias > 0.025
    assert insecure_s.coverage < 0.85  # the bias is about one standard error


def test_difference_test_size_under_the_null(report: AuditReport) -> None:
    """Two runs of the base preset on the same personas: the true change is 0."""
    for estimator in ("reference", "corrected"):
        for metric in ("S", "R"):
            row = report.difference("base-rerun vs base", metric, estimator, "persona")
            assert row.truth == 0.0
            assert 0.03 <= row.rejection_rate <= 0.08, row
    # Adding the rerun variance to the paired persona variance counts the rating
    # noise twice: the test becomes conservative.
    for metric in ("S", "R"):
        row = report.difference("base-rerun vs base", metric, "reference", "reference")
        assert row.rejection_rate < 0.03, row


def test_insecure_against_base_is_always_detected(report: AuditReport) -> None:
    for row in report.differences:
        if row.contrast == "insecure vs base":
            assert row.rejection_rate == 1.0, row


def test_corrected_estimator_fixes_the_coverage_of_small_changes(report: AuditReport) -> None:
    """Secure vs base: a -1.3 % change in S, below the reference estimator's bias."""
    reference = report.difference("secure vs base", "S", "reference", "persona")
    corrected = report.difference("secure vs base", "S", "corrected", "persona")
    assert reference.truth == pytest.approx(corrected.truth) and reference.truth < 0
    assert reference.coverage < 0.8
    assert corrected.coverage >= 0.9
    assert abs(corrected.bias) < abs(reference.bias) / 5


def test_sampling_and_exact_estimates_agree(report: AuditReport) -> None:
    for row in report.agreement:
        # Within the sampled run's own (reference-scheme or persona) SE, always.
        assert row.within_se >= 0.99, row
    for preset in PRESETS:
        corrected = report.agreement_row(preset, "S", "corrected")
        assert abs(corrected.mean_relative_difference) < 0.003
        assert corrected.paired_rejection_rate <= 0.1
        # The paired test, which sees only rating noise, exposes the reference bias.
        assert report.agreement_row(preset, "S", "reference").paired_rejection_rate > 0.9
        assert abs(report.agreement_row(preset, "R", "corrected").mean_relative_difference) < 0.01


def test_sample_cells_follows_the_distributions() -> None:
    probs = np.array([[[0.1, 0.2, 0.0, 0.3, 0.0, 0.4]]])
    cells = sample_cells(
        probs, n_repetitions=20_000, scale=np.arange(6), rng=np.random.default_rng(0)
    )
    freq = np.bincount(cells.values.astype(int).ravel(), minlength=6) / 20_000
    np.testing.assert_allclose(freq, probs[0, 0], atol=0.01)
    assert cells.counts.tolist() == [[20_000]]
    with pytest.raises(ValueError, match="n_repetitions"):
        sample_cells(probs, n_repetitions=0, scale=np.arange(6), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="3-D"):
        sample_cells(probs[0], n_repetitions=2, scale=np.arange(6), rng=np.random.default_rng(0))


def test_audit_validates_its_settings() -> None:
    with pytest.raises(UnknownNameError):
        audit_estimators(presets=("base", "nope"), replications=2)
    with pytest.raises(ValueError, match="replications"):
        audit_estimators(replications=1)
    with pytest.raises(ValueError, match="pool_size"):
        audit_estimators(replications=2, n_personas=50, pool_size=10)
    with pytest.raises(ValueError, match="temperature"):
        audit_estimators(replications=2, temperature=math.nan)


def test_small_audit_is_reproducible() -> None:
    kwargs = dict(
        presets=("base", "insecure"),
        replications=3,
        n_personas=20,
        n_persona_boot=20,
        n_rerun_boot=10,
        pool_size=100,
        rng=5,
    )
    first = audit_estimators(**kwargs)  # type: ignore[arg-type]
    again = audit_estimators(**kwargs)  # type: ignore[arg-type]
    assert first.to_dict() == again.to_dict()
    assert {r.contrast for r in first.differences} == {"base-rerun vs base", "insecure vs base"}
