"""The robustness figure and report section of the sensitivity suite."""

from __future__ import annotations

import dataclasses

import matplotlib as mpl
import pytest
from matplotlib.text import Text

from persona_collapse.report.figures import FIGURE_STYLE, MAX_WIDTH_IN, MIN_TEXT_PT
from persona_collapse.report.html import esc, table
from persona_collapse.report.sensitivity import (
    FAILED_COLOR,
    plot_robustness,
    render_section,
    robustness_figure,
)
from persona_collapse.stats.sensitivity import (
    HEADLINE,
    ChangeRow,
    Condition,
    Robustness,
    SensitivityResult,
)

CONDITIONS = [
    Condition(HEADLINE, "protocol"),
    Condition("template", "plain"),
    Condition("template", "formal"),
    Condition("order", "shuffle 1"),
    Condition("personas", "sample 1"),
    Condition("temperature", "0.5"),
]


def _result(families: int = 1) -> SensitivityResult:
    rows, verdicts = [], []
    for f in range(families):
        for metric, value in (("S", 0.4), ("R", -0.5)):
            mine = []
            for cond in CONDITIONS:
                flips = metric == "S" and cond.level == "plain"
                estimate = -0.3 if flips else value
                mine.append(
                    ChangeRow(
                        family=f"fam{f}",
                        variant="insecure",
                        role="treatment",
                        condition=cond,
                        metric=metric,
                        estimate=estimate,
                        ci_low=estimate - 0.1,
                        ci_high=estimate + 0.1,
                        p_value=1e-6,
                        p_holm=1e-5,
                        significant=True,
                        n_personas=30,
                        status="headline" if cond.is_headline else ("flips" if flips else "holds"),
                    )
                )
            rows += mine
            verdicts.append(
                Robustness(f"fam{f}", "insecure", "treatment", metric, mine[0], tuple(mine[1:]))
            )
    return SensitivityResult(tuple(rows), tuple(verdicts), 0.05, 0.95, 100, 10, 0)


def test_plot_draws_on_new_or_given_axes() -> None:
    result = _result()
    ax = plot_robustness(result, "S")
    labels = {t.get_text(): t.get_color() for t in ax.get_yticklabels()}
    assert list(labels) == [c.label for c in CONDITIONS]
    assert labels["template=plain"] == FAILED_COLOR  # where the headline flips
    assert labels["template=formal"] != FAILED_COLOR
    same = plot_robustness(result, "R", ax=ax.figure.add_subplot(2, 1, 2), alpha=0.5)
    assert same is not ax
    with pytest.raises(ValueError, match="entropy"):
        plot_robustness(result, "entropy")


@pytest.mark.parametrize("families", [1, 4, 12])
def test_text_stays_at_least_8pt(families: int) -> None:
    with mpl.rc_context(FIGURE_STYLE):  # type: ignore[arg-type]
        fig = robustness_figure(_result(families))
    fig.draw_without_rendering()
    scale = min(1.0, MAX_WIDTH_IN / fig.get_size_inches()[0])
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    smallest = min(t.get_fontsize() for t in texts) * scale
    assert smallest >= MIN_TEXT_PT


def test_section_says_robust_or_fragile() -> None:
    fragile = render_section(_result(), table=table, esc=esc, figures=False)
    assert "The finding is fragile" in fragile and "flips under template=plain" in fragile
    assert "<svg" not in fragile
    result = _result()
    healed = tuple(dataclasses.replace(r, estimate=0.4, status="holds") if r.status == "flips"
                   else r for r in result.rows)  # fmt: skip
    verdicts = tuple(
        dataclasses.replace(v, rows=tuple(r for r in healed if not r.condition.is_headline
                                          and r.metric == v.metric))
        for v in result.robustness
    )  # fmt: skip
    robust = dataclasses.replace(result, rows=healed, robustness=verdicts)
    html = render_section(robust, table=table, esc=esc)
    assert "The finding is robust" in html and "<svg" in html
    assert render_section(None, table=table, esc=esc) == ""
