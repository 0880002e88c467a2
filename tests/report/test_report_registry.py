"""A statistic added to the registry reaches the report's tables, JSON and HTML."""

from __future__ import annotations

import math

import pytest

from _registry import SPREAD_MINUS_NOISE, SPREAD_TO_NOISE, register_for_test
from persona_collapse.report.html import render_html
from persona_collapse.report.tables import (
    comparison_frame,
    latex_metrics_table,
    metrics_frame,
    results_json,
    significance_frame,
)
from persona_collapse.study import StudyOutcome, analyse_study

NEW = (SPREAD_TO_NOISE.name, SPREAD_MINUS_NOISE.name)


def test_report_tables_pick_up_a_registered_statistic(
    hostile_outcome: StudyOutcome, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_for_test(monkeypatch)
    results = analyse_study(hostile_outcome.study)

    metrics = metrics_frame(results)
    for name in NEW:
        assert {name, f"{name}_se"} <= set(metrics.columns)
    overall = metrics[metrics["scope"] == "overall"].iloc[0]
    assert overall[SPREAD_TO_NOISE.name] == pytest.approx(overall["S"] / overall["sigma_bar"])
    # The built-in columns keep their order; new ones follow them.
    assert list(metrics.columns).index("sigma_bar_se") < list(metrics.columns).index(NEW[0])

    changes = comparison_frame(results)
    # relative change in % for a log-scale statistic, plain difference otherwise
    assert {f"d{NEW[0]}_pct", f"d{NEW[1]}"} <= set(changes.columns)
    row = changes[(changes["comparison"] == "excess") & (changes["scope"] == "overall")].iloc[0]
    by_label = {v.label: v.metrics for v in results.families[row["family"]].variants.values()}
    fam = results.families[row["family"]]
    assert fam.treatment is not None and fam.control is not None
    treated, control = by_label[fam.treatment], by_label[fam.control]
    assert treated is not None and control is not None
    gap = treated.estimate(NEW[1]).value - control.estimate(NEW[1]).value
    assert row[f"d{NEW[1]}"] == pytest.approx(gap)

    tests = significance_frame(results)
    assert set(NEW) <= set(tests["metric"])
    holm = tests[tests["metric"] == NEW[1]]["p_holm"].dropna()
    assert len(holm) and all(0 <= p <= 1 for p in holm)

    data = results_json(results)
    fam = next(iter(data["families"].values()))
    base = fam["variants"][fam["base"]]["metrics"]
    assert math.isfinite(base[NEW[0]]) and NEW[1] in base

    page = render_html(results, [])
    for stat in (SPREAD_TO_NOISE, SPREAD_MINUS_NOISE):
        assert f"Δ{stat.label}" in page  # change columns and test rows
    # Figures and the LaTeX table keep to the headline statistics.
    assert NEW[0] not in latex_metrics_table(results)


def test_without_the_statistic_the_report_is_unchanged(hostile_outcome: StudyOutcome) -> None:
    results = hostile_outcome.results
    columns = list(metrics_frame(results).columns)
    assert columns[5:11] == ["S", "S_se", "R", "R_se", "sigma_bar", "sigma_bar_se"]
    comparison_columns = list(comparison_frame(results).columns)
    assert comparison_columns[4:7] == ["dS_pct", "dR_pct", "dsigma_bar_pct"]
    assert not {f"d{n}" for n in NEW} & set(comparison_columns)
    assert not {f"d{n}_pct" for n in NEW} & set(comparison_columns)
    assert not set(NEW) & set(significance_frame(results)["metric"])
