"""Verdicts follow the bias-corrected test where a significance row has one (issue 16),
and say the paper's estimate beside it; rows without one (other statistics, or NaN
after a CSV round trip) keep the paper's test."""

from __future__ import annotations

import math

from persona_collapse.report.model import ChangeTest, change_text

PAPER = {"estimate": 0.117, "ci_low": 0.05, "ci_high": 0.19, "p_holm": 0.03, "significant": True}
CORRECTED = {
    "estimate_corrected": 0.111,
    "ci_low_corrected": -0.01,
    "ci_high_corrected": 0.23,
    "p_holm_corrected": 0.08,
    "significant_corrected": False,
}


def test_change_test_reads_the_corrected_test_with_the_papers_estimate() -> None:
    test = ChangeTest.from_row({**PAPER, **CORRECTED}, alpha=0.05)
    assert test.corrected and test.estimator == "corrected"
    assert (test.estimate, test.ci_low, test.ci_high) == (0.111, -0.01, 0.23)
    assert test.p_holm == 0.08 and not test.significant  # the paper's test would reject
    assert test.paper_estimate == 0.117
    text = change_text("S", 0.117, test)
    assert text.startswith("no significant change in S (ΔS +11.1 % bias-corrected")
    assert "(paper's estimate +11.7 %)" in text


def test_rows_without_a_corrected_test_keep_the_papers() -> None:
    for row in (dict(PAPER), {**PAPER, **dict.fromkeys(CORRECTED, math.nan)}):
        test = ChangeTest.from_row(row, alpha=0.05)
        assert not test.corrected and math.isnan(test.paper_estimate)
        assert (test.estimate, test.p_holm, test.significant) == (0.117, 0.03, True)
        assert "paper's estimate" not in change_text("S", 0.117, test)
