"""Plot functions: ``ax=None`` or a given axes, ``**kwargs`` forwarded, the axes returned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle

from persona_collapse.report import figures
from persona_collapse.study import StudyOutcome

BAR_PLOTS: list[Callable[..., Axes]] = [
    lambda r, **kw: figures.plot_metric_bars(r, "S", **kw),
    lambda r, **kw: figures.plot_metric_bars(r, "R", **kw),
    lambda r, **kw: figures.plot_deltas(r, "sigma_bar", **kw),
    lambda r, **kw: figures.plot_foundation_deltas(r, "S", **kw),
    figures.plot_ceiling_saturation,
    figures.plot_scale_usage,
    figures.plot_rating_entropy,
    figures.plot_parse_failures,
]


@pytest.mark.parametrize("plot", BAR_PLOTS)
def test_bar_plots_follow_the_contract(
    plot: Callable[..., Axes], hostile_outcome: StudyOutcome
) -> None:
    results = hostile_outcome.results
    ax = plot(results)
    assert isinstance(ax, Axes) and ax.patches
    own = figures.new_axes()
    assert plot(results, ax=own, alpha=0.25) is own
    bars = [p for p in own.patches if isinstance(p, Rectangle) and p.get_alpha() == 0.25]
    assert bars, "kwargs must reach the bars"


def test_metric_bars_show_values_errors_and_band(hostile_outcome: StudyOutcome) -> None:
    results = hostile_outcome.results
    ax = figures.plot_metric_bars(results, "S")
    band = [p for p in ax.patches if str(p.get_label()).startswith("frontier band")]
    assert len(band) == 1, "the frontier band is shaded"
    heights = sorted(round(p.get_height(), 12) for p in ax.patches if p not in band)
    expected = sorted(round(v.metrics.S, 12) for v in results.variants() if v.metrics)
    assert heights == expected
    errorbars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 3  # one per variant label
    half = sorted(
        round(float(seg[1][1] - seg[0][1]) / 2, 12)
        for c in errorbars
        for seg in c.lines[2][0].get_segments()
    )
    assert half == sorted(round(v.metrics.S_se, 12) for v in results.variants() if v.metrics)
    with pytest.raises(ValueError, match="metric"):
        figures.plot_metric_bars(results, "Q")


def test_radar_needs_polar_axes_and_draws_every_profile(hostile_outcome: StudyOutcome) -> None:
    results = hostile_outcome.results
    fam = results.families["plain"]
    ax = figures.plot_profile_radar(fam, foundations=results.foundations, scale=results.scale)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["base (self)", "secure (self)", "insecure (self)", "toxic personas"]
    with pytest.raises(ValueError, match="polar"):
        figures.plot_profile_radar(
            fam, foundations=results.foundations, scale=results.scale, ax=figures.new_axes()
        )


def test_strip_and_curve_plots(hostile_outcome: StudyOutcome) -> None:
    results = hostile_outcome.results
    ax = figures.plot_persona_failures(results, marker="s")
    assert len(ax.collections) == len(results.variants())
    kwargs: dict[str, Any] = {"lw": 3}
    assert isinstance(figures.plot_temperature_curves(results, "R", **kwargs), Axes)
    with pytest.raises(ValueError, match="metric"):
        figures.plot_temperature_curves(results, "sigma_bar")
