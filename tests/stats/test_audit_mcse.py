"""Monte-Carlo standard errors of the audit's coverage and rejection figures."""

from __future__ import annotations

import math

import pytest

from persona_collapse.stats.audit import (
    DifferenceAudit,
    EstimatorAudit,
    mc_se,
    replication_warning,
)


def test_mc_se_is_the_binomial_standard_error() -> None:
    assert mc_se(0.95, 500) == pytest.approx(math.sqrt(0.95 * 0.05 / 500))
    assert mc_se(0.0, 100) == 0.0
    assert math.isnan(mc_se(0.5, 0))


def test_warning_when_replications_cannot_tell_95_from_90() -> None:
    # 2 MC SEs at 95 % reach 2.5 points up to 304 replications
    warning = replication_warning(200)
    assert warning is not None
    assert "200 replications" in warning and "95 % from 90 %" in warning
    assert "at least 305" in warning
    assert replication_warning(304) is not None
    assert replication_warning(305) is None
    assert replication_warning(500) is None


def test_rows_carry_their_mc_ses() -> None:
    row = EstimatorAudit(
        preset="base", metric="S", estimator="corrected", truth=1.0, mean=1.0, bias=0.0,
        relative_bias=0.0, rmse=0.1, sd=0.1, mean_se=0.1, coverage=0.94, replications=500,
    )  # fmt: skip
    assert row.coverage_mcse == pytest.approx(math.sqrt(0.94 * 0.06 / 500))
    assert row.to_dict()["coverage_mcse"] == row.coverage_mcse
    diff = DifferenceAudit(
        contrast="base-rerun vs base", metric="S", estimator="corrected", variance="persona",
        truth=0.0, mean=0.0, bias=0.0, rmse=0.01, sd_log=0.01, mean_se=0.01, coverage=0.95,
        rejection_rate=0.05, replications=400,
    )  # fmt: skip
    data = diff.to_dict()
    assert data["rejection_mcse"] == pytest.approx(math.sqrt(0.05 * 0.95 / 400))
    assert data["coverage_mcse"] == pytest.approx(math.sqrt(0.95 * 0.05 / 400))
