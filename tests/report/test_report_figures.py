"""Plot functions: ``ax=None`` or a given axes, ``**kwargs`` forwarded, the axes returned."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle

from persona_collapse.report import figures
from persona_collapse.report.model import TemperaturePoint
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
    lambda r, **kw: figures.plot_foundation_metrics(r, "plain", "R", **kw),
    lambda r, **kw: figures.plot_rating_histogram(r, "plain", **kw),
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
    errorbars = [
        c
        for c in ax.containers
        if isinstance(c, ErrorbarContainer) and c.get_label() != figures.CORRECTED_MARKER_LABEL
    ]
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


def _whiskers(ax: Axes) -> list[tuple[float, float]]:
    """(low, high) of every error bar drawn on ``ax``, sorted, rounded to 9 places."""
    return sorted(
        (round(float(seg[0][1]), 9), round(float(seg[1][1]), 9))
        for c in ax.containers
        if isinstance(c, ErrorbarContainer)
        for seg in c.lines[2][0].get_segments()
    )


def test_delta_bars_carry_the_tests_95_percent_intervals(hostile_outcome: StudyOutcome) -> None:
    # Issue 10.7: the whiskers are the CIs of significance.csv, in % of the base.
    results = hostile_outcome.results
    ax = figures.plot_deltas(results, "S")
    whiskers = _whiskers(ax)
    # Issue 16: where the verdicts follow the bias-corrected test, so do the bars.
    assert figures.deltas_corrected(results, "S")
    key = "_corrected"
    expected = sorted(
        (round(100 * float(row[f"ci_low{key}"]), 9), round(100 * float(row[f"ci_high{key}"]), 9))
        for row in results.significance or ()
        if row["metric"] == "S" and row["scope"] == "overall"
    )
    assert whiskers and whiskers == expected
    tested = [
        r for r in results.significance or () if r["metric"] == "S" and r["scope"] == "overall"
    ]
    heights = {round(p.get_height(), 9) for p in ax.patches}
    assert {round(100 * float(r["estimate_corrected"]), 9) for r in tested} <= heights
    assert "bias-corrected difference test" in figures._deltas_caption(results)


def test_delta_bars_fall_back_to_the_papers_test_without_a_corrected_one(
    hostile_outcome: StudyOutcome,
) -> None:
    results = hostile_outcome.results
    paper_only = [
        {k: v for k, v in row.items() if not k.endswith("_corrected")}
        for row in results.significance or ()
    ]
    results = dataclasses.replace(results, significance=paper_only)
    assert not figures.deltas_corrected(results, "S")
    ax = figures.plot_deltas(results, "S")
    whiskers = _whiskers(ax)
    expected = sorted(
        (round(100 * float(row["ci_low"]), 9), round(100 * float(row["ci_high"]), 9))
        for row in paper_only
        if row["metric"] == "S" and row["scope"] == "overall"
    )
    assert whiskers and whiskers == expected
    assert "paper's estimates" in figures._deltas_caption(results)


@pytest.mark.parametrize("metric", ["S", "R"])
def test_metric_bars_mark_the_bias_corrected_estimates(
    hostile_outcome: StudyOutcome, metric: str
) -> None:
    # Issue 16: bars are the paper's estimates; diamonds the bias-corrected ones (± SE).
    from persona_collapse.report.model import corrected_value

    results = hostile_outcome.results
    ax = figures.plot_metric_bars(results, metric)
    (marks,) = [
        c
        for c in ax.containers
        if isinstance(c, ErrorbarContainer) and c.get_label() == figures.CORRECTED_MARKER_LABEL
    ]
    ys = sorted(round(float(y), 9) for y in marks.lines[0].get_ydata())
    expected = [corrected_value(v, metric) for v in results.variants()]
    assert ys == sorted(round(x, 9) for x in expected if x is not None) and ys
    caption = dict((k, c) for k, _, c, _ in figures.FIGURES)[f"fig_{metric.lower()}_bars"]
    text = caption(results) if callable(caption) else caption
    assert "paper's estimate" in text and "bias-corrected" in text


def test_foundation_metrics_show_absolute_values(hostile_outcome: StudyOutcome) -> None:
    # Issue 10.8: absolute per-foundation S for every variant, not only the change.
    results = hostile_outcome.results
    fam = results.families["plain"]
    ax = figures.plot_foundation_metrics(results, "plain", "S")
    heights = sorted(round(p.get_height(), 9) for p in ax.patches)
    expected = sorted(
        round(v.metrics.per_foundation[f].estimates["S"].value, 9)
        for v in fam.variants.values()
        if v.metrics is not None
        for f in results.foundations
    )
    assert heights == expected


def test_heatmap_scatter_and_histogram(hostile_outcome: StudyOutcome) -> None:
    # Issue 10.8: persona x item means, how personas move, the rating histogram.
    results = hostile_outcome.results
    fam = results.families["plain"]
    base = fam.variants[fam.base]
    assert base.cell_means is not None
    ax = figures.plot_cell_heatmap(base, scale=results.scale)
    image = ax.collections[0].get_array()
    assert image is not None
    assert image.size == len(base.cell_means.persona_ids) * len(base.cell_means.item_ids)
    own = figures.new_axes()
    assert figures.plot_cell_heatmap(base, scale=results.scale, ax=own, cmap="magma") is own
    assert own.collections[0].get_cmap().name == "magma"
    ax = figures.plot_persona_shift(fam, alpha=0.3)
    offsets = [c for c in ax.collections if c.get_alpha() == 0.3]
    assert len(offsets) == len(fam.variants) - 1
    base_means = base.cell_means.persona_means()
    xs = sorted(round(float(x), 9) for x in offsets[0].get_offsets()[:, 0])
    assert xs == sorted(round(base_means[p], 9) for p in base_means)
    ax = figures.plot_rating_histogram(results, "plain")
    per_variant = len(results.scale)
    total = sum(p.get_height() for p in ax.patches[:per_variant])
    assert total == pytest.approx(100.0)


def test_temperature_band_is_drawn_only_at_its_temperature(
    hostile_outcome: StudyOutcome,
) -> None:
    # Issue 10.9: no band across all temperatures; a mark at T = 0.1 only.
    results = hostile_outcome.results
    families = {}
    for name, fam in results.families.items():
        variants = {}
        for label, v in fam.variants.items():
            assert v.metrics is not None
            curve = tuple(TemperaturePoint(t, dict(v.metrics.estimates)) for t in (0.1, 0.5, 1.0))
            variants[label] = dataclasses.replace(v, temperature_curve=curve)
        families[name] = dataclasses.replace(fam, variants=variants)
    ax = figures.plot_temperature_curves(dataclasses.replace(results, families=families), "S")
    assert not [p for p in ax.patches if "band" in str(p.get_label())]  # no axhspan
    marks = [c for c in ax.collections if "frontier band" in str(c.get_label())]
    assert len(marks) == 1
    (segment,) = marks[0].get_segments()
    assert list(segment[:, 0]) == [0.1, 0.1]
    assert sorted(segment[:, 1]) == list(results.band)


def test_unchanged_results_reuse_their_figures(
    hostile_outcome: StudyOutcome, tmp_path: Path
) -> None:
    # Issue 10.12: a no-op re-render draws nothing; a change redraws.
    results = hostile_outcome.results
    first = figures.render_figures(results, tmp_path)
    stamps = {f.key: f.files[0].stat().st_mtime_ns for f in first}
    start = time.perf_counter()
    again = figures.render_figures(results, tmp_path)
    reused_s = time.perf_counter() - start
    assert [(f.key, f.svg, f.caption) for f in again] == [(f.key, f.svg, f.caption) for f in first]
    assert {f.key: f.files[0].stat().st_mtime_ns for f in again} == stamps
    assert reused_s < 2.0
    changed = dataclasses.replace(results, band=(0.5, 0.9))
    assert figures.results_fingerprint(changed) != figures.results_fingerprint(results)
    redrawn = figures.render_figures(changed, tmp_path)
    assert any(f.files[0].stat().st_mtime_ns != stamps[f.key] for f in redrawn)


def test_a_new_drawing_revision_invalidates_cached_figures(
    hostile_outcome: StudyOutcome, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Figures cached before the bias-corrected marks (issue 16) are redrawn, not reused.
    results = hostile_outcome.results
    before = figures.results_fingerprint(results)
    assert figures.results_fingerprint(results) == before
    monkeypatch.setattr(figures, "FIGURE_REVISION", figures.FIGURE_REVISION + 1)
    assert figures.results_fingerprint(results) != before
