"""Figures of a study (matplotlib, object-oriented API: no pyplot, no global state).

Every ``plot_*`` function draws on ``ax`` (a new figure's axes when None), passes
``**kwargs`` to the main artist and returns the axes; none calls ``show``.
:func:`render_figures` lays them out, writes each figure as PDF and PNG and
keeps an SVG rendering for the HTML report.

Colours follow the variant's role: base blue, control green, treatment red,
other variants purple/brown, the toxic-persona control black.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persona_collapse.core.errors import MissingDependencyError
from persona_collapse.core.files import atomic_path
from persona_collapse.report.model import (
    ChangeTest,
    FamilyResult,
    StudyResults,
    VariantResult,
    corrected_value,
    excess_points,
)
from persona_collapse.report.verification import ExcessPoint
from persona_collapse.stats.compare import Change, VariantChange
from persona_collapse.stats.display import HEADLINE, delta
from persona_collapse.stats.display import label as stat_label
from persona_collapse.stats.registry import get_statistic, statistic_names

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROLE_COLORS: dict[str, str] = {
    "base": "#3b6fb6",
    "control": "#3a9a5b",
    "treatment": "#c8453c",
}
OTHER_COLORS: tuple[str, ...] = ("#7b5aa6", "#9c6b30", "#d17fb2", "#5f5f5f")
TOXIC_COLOR = "#222222"
BAND_COLOR = "#f1c84b"

METRIC_LABELS: dict[str, str] = {
    "S": "Moral susceptibility S",
    "R": "Robustness R = 1/σ̄",
    "sigma_bar": "Mean within-cell sd σ̄",
}
"""Axis labels of the built-in statistics; any other registered statistic is labelled
from the registry (:func:`axis_label`)."""

MAX_WIDTH_IN = 10.0
"""Widest figure, inches: the report's column. Wider content is faceted (more rows),
never shrunk, so text keeps its size when the page or a printout shows the figure."""

MIN_TEXT_PT = 8.0
"""Smallest text at the printed size (points); checked by the tests."""

FONT_SIZE_PT = 10.0
"""Base font size; ``small`` (legends, some ticks) is 8.3 pt."""

FIGURE_STYLE: dict[str, object] = {
    "font.size": FONT_SIZE_PT,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
"""matplotlib settings every figure of the report is drawn with."""

BAND_TEMPERATURE = 0.1
"""Temperature the frontier S band was measured at (the paper's T = 0.1)."""

LINE_STYLES: tuple[str, ...] = ("-", "--", "-.", ":")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P")
"""Distinct line styles and markers, so overlapping lines stay apart."""

DELTA_PANELS: tuple[str, ...] = (*HEADLINE, "sigma_bar")
"""Statistics of ``fig_deltas``: the headline ones and σ̄, whose inverse R is."""

FOUNDATION_PANELS: tuple[str, ...] = ("sigma_bar", "S")
"""Statistics of ``fig_foundations`` (left to right)."""


def axis_label(metric: str) -> str:
    """Axis label of registered statistic ``metric``.

    Raises:
        ValueError: ``metric`` is not a registered statistic.
    """
    names = statistic_names()
    if metric not in names:
        raise ValueError(f"metric must be one of {list(names)}, got {metric!r}")
    return METRIC_LABELS.get(metric) or f"{get_statistic(metric).description} {stat_label(metric)}"


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError("matplotlib", "report") from None


def new_axes(*, polar: bool = False, figsize: tuple[float, float] = (6.4, 4.0)) -> Axes:
    """Axes on a new figure that belongs to no pyplot state (garbage-collected normally)."""
    _require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot(projection="polar" if polar else None)


def _variant_colors(results: StudyResults) -> dict[str, str]:
    """Colour per variant label: by role where the label has one, else a distinct colour."""
    colors: dict[str, str] = {}
    others = iter(OTHER_COLORS * 4)
    for v in results.variants():
        if v.label in colors:
            continue
        colors[v.label] = ROLE_COLORS.get(v.role or "", "") or next(others)
    return colors


def _labels(results: StudyResults) -> list[str]:
    return list(dict.fromkeys(v.label for v in results.variants()))


def _change_of(change: Change, metric: str) -> float:
    return change.values.get(metric, math.nan)


def _metric(v: VariantResult, metric: str) -> tuple[float, float]:
    found = None if v.metrics is None else v.metrics.estimates.get(metric)
    if found is None:
        return math.nan, math.nan
    return float(found.value), float(found.se)


def _outside_legend(ax: Axes) -> None:
    """Legend to the right of the axes, where it cannot cover bars."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def plot_metric_bars(
    results: StudyResults, metric: str = "S", *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """Bars of ``metric`` (a registered statistic: ``S``, ``R``, ...) per family and variant,
    ± SE.

    For ``S`` the frontier band is shaded. ``kwargs`` go to ``ax.bar``.
    """
    y_label = axis_label(metric)
    ax = ax if ax is not None else new_axes()
    labels = _labels(results)
    colors = _variant_colors(results)
    width = 0.8 / max(len(labels), 1)
    if metric == "S":
        low, high = results.band
        ax.axhspan(
            low, high, color=BAND_COLOR, alpha=0.3, lw=0, label=f"frontier band [{low:g}, {high:g}]"
        )
    families = list(results.families.values())
    for j, label in enumerate(labels):
        xs, ys, es = [], [], []
        for i, fam in enumerate(families):
            v = fam.variants.get(label)
            if v is None:
                continue
            y, e = _metric(v, metric)
            if not _finite(y):
                continue
            xs.append(i + (j - (len(labels) - 1) / 2) * width)
            ys.append(y)
            es.append(e if _finite(e) else 0.0)
        if xs:
            ax.bar(
                xs, ys, width * 0.92, yerr=es, capsize=2, color=colors[label], label=label, **kwargs
            )
    _corrected_markers(ax, results, metric, labels, width)
    ax.set_xticks(range(len(families)), [f.name for f in families])
    ax.set_ylabel(y_label)
    ax.set_xlim(-0.6, len(families) - 0.4)
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


CORRECTED_MARKER_LABEL = "bias-corrected (± jackknife SE)"
"""Legend label of the bias-corrected estimates drawn over the paper's bars."""


def has_corrected(results: StudyResults, metric: str) -> bool:
    """Whether any variant has a bias-corrected ``metric`` (only S, σ̄ and R have one)."""
    return any(corrected_value(v, metric) is not None for v in results.variants())


def _corrected_markers(
    ax: Axes, results: StudyResults, metric: str, labels: Sequence[str], width: float
) -> None:
    """Black diamonds (± jackknife SE) at the bias-corrected ``metric`` of every bar that
    has one: the bars are the paper's estimates, the S band check uses the corrected S."""
    xs, ys, es = [], [], []
    for i, fam in enumerate(results.families.values()):
        for j, label in enumerate(labels):
            v = fam.variants.get(label)
            value = None if v is None else corrected_value(v, metric)
            if v is None or value is None or not _finite(value):
                continue
            se = corrected_value(v, metric, key="_se")
            xs.append(i + (j - (len(labels) - 1) / 2) * width)
            ys.append(value)
            es.append(se if se is not None and _finite(se) else 0.0)
    if xs:
        ax.errorbar(
            xs, ys, yerr=es, fmt="D", color="black", markersize=4, capsize=2, lw=0.8,
            label=CORRECTED_MARKER_LABEL,
        )  # fmt: skip


def _tested(results: StudyResults, family: str, contrast: str, metric: str) -> ChangeTest | None:
    """The bias-corrected difference test of a change (the one the verdicts follow), or
    None when the study has none for it."""
    row = results.test_row(family, contrast, metric)
    if row is None:
        return None
    test = ChangeTest.from_row(row, results.alpha)
    return test if test.corrected else None


def deltas_corrected(results: StudyResults, metric: str) -> bool:
    """Whether the Δ bars of ``metric`` show the bias-corrected changes: every tested
    change of the study has a bias-corrected test (else all bars are the paper's)."""
    found = False
    for fam in results.families.values():
        cmp = fam.comparison
        if cmp is None:
            continue
        contrasts = [*cmp.variants, *(["excess"] if cmp.excess is not None else [])]
        for contrast in contrasts:
            if _tested(results, fam.name, contrast, metric) is None:
                return False
            found = True
    return found


def _ci_errors(
    results: StudyResults, family: str, contrast: str, metric: str, value: float
) -> tuple[float, float] | None:
    """``(below, above)`` of the 95 % interval of a change (%), from its difference test."""
    row = results.test_row(family, contrast, metric)
    if row is None:
        return None
    try:
        low, high = 100 * float(row["ci_low"]), 100 * float(row["ci_high"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(value)):
        return None
    return max(value - low, 0.0), max(high - value, 0.0)


def plot_deltas(
    results: StudyResults, metric: str = "S", *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """Relative change (%) of ``metric`` against the base, per family and variant, with the
    95 % interval of its difference test (when computed), the excess (treatment − control)
    hatched and the mean over families (not tested). Where every change has a
    bias-corrected test (the verdicts follow it), the bars are its estimates and intervals
    (:func:`deltas_corrected`); else the paper's. ``kwargs`` go to ``ax.bar``."""
    axis_label(metric)  # validates the name
    ax = ax if ax is not None else new_axes()
    colors = _variant_colors(results)
    corrected = deltas_corrected(results, metric)
    Bar = tuple[str, float, str, bool, "tuple[float, float] | None"]
    groups: list[tuple[str, list[Bar]]] = []
    by_role: dict[str, list[float]] = {}  # corrected changes (%) by role, for the mean group

    def bar(family: str, contrast: str, paper: Change) -> tuple[float, tuple[float, float] | None]:
        if not corrected:
            value = 100 * _change_of(paper, metric)
            return value, _ci_errors(results, family, contrast, metric, value)
        test = _tested(results, family, contrast, metric)
        if test is None:  # deltas_corrected found one for every change
            return math.nan, None
        value, low, high = 100 * test.estimate, 100 * test.ci_low, 100 * test.ci_high
        err = None
        if _finite(low) and _finite(high) and _finite(value):
            err = (max(value - low, 0.0), max(high - value, 0.0))
        return value, err

    for fam in results.families.values():
        cmp = fam.comparison
        if cmp is None:
            continue
        bars: list[Bar] = []
        roles = {fam.control: "control", fam.treatment: "treatment"}
        for label, ch in cmp.variants.items():
            value, err = bar(fam.name, label, ch.overall)
            bars.append((label, value, colors.get(label, OTHER_COLORS[0]), False, err))
            by_role.setdefault(roles.get(label) or label, []).append(value)
        if cmp.excess is not None:
            value, err = bar(fam.name, "excess", cmp.excess.overall)
            bars.append(("excess", value, "#888888", True, err))
            by_role.setdefault("excess", []).append(value)
        groups.append((fam.name, bars))
    avg = results.average
    if avg is not None and avg.families > 1:
        # Pooled by role: coloured like the roles' variants, no legend entries of its own.
        # Under the corrected changes: their mean over the families having the role.
        def pooled(role: str, ch: VariantChange) -> float:
            if not corrected:
                return 100 * _change_of(ch.overall, metric)
            found = by_role.get(role, [])
            return float(np.mean(found)) if found else math.nan

        bars = [
            ("", pooled(role, ch), ROLE_COLORS.get(role, "#888"), False, None)
            for role, ch in avg.variants.items()
        ]
        if avg.excess is not None:
            bars.append(("excess", pooled("excess", avg.excess), "#888888", True, None))
        groups.append((f"mean of {avg.families}", bars))
    seen: set[str] = set()
    for i, (_, bars) in enumerate(groups):
        width = 0.8 / max(len(bars), 1)
        for j, (label, value, color, hatched, err) in enumerate(bars):
            if not _finite(value):
                continue
            x = i + (j - (len(bars) - 1) / 2) * width
            ax.bar(
                x,
                value,
                width * 0.92,
                color="white" if hatched else color,
                edgecolor=color,
                hatch="//" if hatched else None,
                label=None if not label or label in seen else label,
                **kwargs,
            )
            if err is not None:
                ax.errorbar(
                    x, value, yerr=[[err[0]], [err[1]]], fmt="none", ecolor="black", lw=0.8,
                    capsize=2,
                )  # fmt: skip
            seen.add(label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups])
    ax.set_ylabel(f"{delta(metric)} vs base (%)" + (" (corrected)" if corrected else ""))
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_foundation_deltas(
    results: StudyResults,
    metric: str = "sigma_bar",
    *,
    role: str = "treatment",
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Per-foundation change (%) of ``metric`` for the variant with ``role`` in each family,
    with the mean over families as black diamonds. ``kwargs`` go to ``ax.bar``."""
    ax = ax if ax is not None else new_axes()
    foundations = list(results.foundations)
    series: list[tuple[str, list[float]]] = []
    for fam in results.families.values():
        label = {"control": fam.control, "treatment": fam.treatment}.get(role)
        cmp = fam.comparison
        if label is None or cmp is None or label not in cmp.variants:
            continue
        per = cmp.variants[label].per_foundation
        series.append(
            (
                fam.name,
                [
                    100 * per[f].values.get(metric, math.nan) if f in per else math.nan
                    for f in foundations
                ],
            )
        )
    width = 0.8 / max(len(series), 1)
    palette = ("#c8453c", "#e07b39", "#b0306a", "#8c2d19", "#e3a33b", "#6d1f3c")
    for j, (name, values) in enumerate(series):
        xs = np.arange(len(foundations)) + (j - (len(series) - 1) / 2) * width
        ax.bar(xs, values, width * 0.92, color=palette[j % len(palette)], label=name, **kwargs)
    if len(series) > 1:
        mean = np.nanmean(np.array([v for _, v in series], dtype=float), axis=0)
        ax.plot(range(len(foundations)), mean, "D", color="black", label="mean")
    ax.axhline(0, color="black", lw=0.8)
    short = [f.split("/")[0] for f in foundations]
    ax.set_xticks(range(len(foundations)), short, rotation=20)
    ax.set_ylabel(f"{delta(metric)} of the {role} (%)")
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_profile_radar(
    family: FamilyResult,
    *,
    foundations: Sequence[str],
    scale: Sequence[int],
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Radar of a family's self-profiles (every variant) and its toxic-persona control,
    with ± sd bands. ``ax`` must be polar. ``kwargs`` go to ``ax.plot``."""
    ax = ax if ax is not None else new_axes(polar=True, figsize=(4.5, 4.5))
    if getattr(ax, "name", "") != "polar":
        raise ValueError("ax must be a polar axes (projection='polar')")
    n = len(foundations)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    closed = np.concatenate([angles, angles[:1]])
    others = iter(OTHER_COLORS * 4)
    profiles = []
    for k, v in enumerate(family.variants.values()):
        if v.self_profile is not None:
            color = ROLE_COLORS.get(v.role or "", "") or next(others)
            look = (LINE_STYLES[k % len(LINE_STYLES)], MARKERS[k % len(MARKERS)])
            profiles.append((f"{v.label} (self)", v.self_profile, color, look))
    base = family.variants.get(family.base)
    if base is not None and base.toxic_profile is not None:
        profiles.append(("toxic personas", base.toxic_profile, TOXIC_COLOR, (":", "x")))
    for k, (label, profile, color, (style, marker)) in enumerate(profiles):
        mean = np.array([profile.mean.get(f, math.nan) for f in foundations], dtype=float)
        sd = np.array([profile.sd.get(f, math.nan) for f in foundations], dtype=float)
        sd = np.nan_to_num(sd)
        ax.plot(
            closed,
            np.append(mean, mean[:1]),
            linestyle=style,
            marker=marker,
            # Growing, alternately hollow markers keep coinciding lines (base and secure)
            # apart.
            ms=4 + 1.5 * k,
            markerfacecolor="none" if k % 2 else color,
            color=color,
            label=label,
            **kwargs,
        )
        low, high = np.clip(mean - sd, scale[0], scale[-1]), np.clip(mean + sd, scale[0], scale[-1])
        ax.fill_between(
            closed,
            np.append(low, low[:1]),
            np.append(high, high[:1]),
            color=color,
            alpha=0.12,
            lw=0,
        )
    ax.set_xticks(angles, [f.split("/")[0] for f in foundations])
    ax.set_ylim(scale[0], scale[-1])
    ax.set_title(family.name, fontsize="medium")
    ax.legend(
        fontsize="small", frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2
    )
    return ax


def _variant_ticks(ax: Axes, variants: Sequence[VariantResult]) -> None:
    ax.set_xticks(range(len(variants)), [f"{v.family}\n{v.label}" for v in variants])


def plot_ceiling_saturation(
    results: StudyResults, *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """Ceiling-saturation index per variant: persona cells and self-run items.
    ``kwargs`` go to ``ax.bar``."""
    ax = ax if ax is not None else new_axes()
    variants = results.variants()
    xs = np.arange(len(variants))
    colors = _variant_colors(results)
    ax.bar(
        xs - 0.2,
        [v.ceiling_persona for v in variants],
        0.38,
        color=[colors[v.label] for v in variants],
        label="persona cells",
        **kwargs,
    )
    ax.bar(
        xs + 0.2,
        [v.ceiling_self for v in variants],
        0.38,
        color="white",
        edgecolor=[colors[v.label] for v in variants],
        hatch="..",
        label="self items",
    )
    _variant_ticks(ax, variants)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of means ≥ max − 0.5")
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_scale_usage(results: StudyResults, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Share of persona-run ratings at the floor and at the ceiling, per variant.
    ``kwargs`` go to ``ax.bar``."""
    ax = ax if ax is not None else new_axes()
    variants = results.variants()
    xs = np.arange(len(variants))
    floor = [math.nan if v.scale_usage is None else v.scale_usage.floor_share for v in variants]
    ceil = [math.nan if v.scale_usage is None else v.scale_usage.ceiling_share for v in variants]
    ax.bar(xs - 0.2, floor, 0.38, color="#7f9cc9", label="at floor", **kwargs)
    ax.bar(xs + 0.2, ceil, 0.38, color="#d9825b", label="at ceiling", **kwargs)
    _variant_ticks(ax, variants)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of ratings")
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_rating_entropy(results: StudyResults, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Entropy (bits) of each variant's rating histogram; dashed: uniform use of the scale.
    ``kwargs`` go to ``ax.bar``."""
    ax = ax if ax is not None else new_axes()
    variants = results.variants()
    colors = _variant_colors(results)
    values = [math.nan if v.scale_usage is None else v.scale_usage.entropy_bits for v in variants]
    ax.bar(range(len(variants)), values, 0.6, color=[colors[v.label] for v in variants], **kwargs)
    ax.axhline(
        math.log2(max(len(results.scale), 2)), color="black", ls="--", lw=0.8, label="uniform"
    )
    _variant_ticks(ax, variants)
    ax.set_ylabel("rating entropy (bits)")
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_parse_failures(results: StudyResults, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Parse-failure rate (%) per variant: persona run (bars) and self run (markers).
    ``kwargs`` go to ``ax.bar``."""
    ax = ax if ax is not None else new_axes()
    variants = results.variants()
    colors = _variant_colors(results)
    rates = [math.nan if v.parse is None else 100 * v.parse.rate for v in variants]
    ax.bar(
        range(len(variants)),
        rates,
        0.6,
        color=[colors[v.label] for v in variants],
        label="persona run",
        **kwargs,
    )
    ax.plot(
        range(len(variants)),
        [100 * v.self_parse_rate for v in variants],
        "o",
        color="black",
        label="self run",
    )
    _variant_ticks(ax, variants)
    ax.set_ylabel("replies without a valid rating (%)")
    ax.set_ylim(bottom=0)
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_persona_failures(results: StudyResults, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Parse-failure rate (%) of every persona, one column of points per variant.
    ``kwargs`` go to ``ax.scatter``."""
    ax = ax if ax is not None else new_axes()
    variants = results.variants()
    colors = _variant_colors(results)
    for i, v in enumerate(variants):
        if v.parse is None or not v.parse.persona_rates:
            continue
        rates = 100 * np.asarray(v.parse.persona_rates)
        # Deterministic spread (golden-ratio sequence) instead of random jitter.
        offsets = ((np.arange(len(rates)) * 0.618034) % 1.0 - 0.5) * 0.5
        ax.scatter(i + offsets, rates, s=8, color=colors[v.label], alpha=0.7, **kwargs)
    _variant_ticks(ax, variants)
    ax.set_ylabel("per-persona failure rate (%)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_temperature_curves(
    results: StudyResults, metric: str = "S", *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """``metric`` (a headline statistic, :data:`~persona_collapse.stats.display.HEADLINE`:
    ``S`` or ``R``) against temperature for every logprobs variant, ± SE. ``kwargs`` go to
    ``ax.plot``."""
    if metric not in HEADLINE:
        raise ValueError(f"metric must be one of {list(HEADLINE)}, got {metric!r}")
    y_label = axis_label(metric)
    ax = ax if ax is not None else new_axes()
    colors = _variant_colors(results)
    styles = LINE_STYLES
    if metric == "S":
        # The band was measured at T = 0.1: marked there only, not across temperatures.
        low, high = results.band
        ax.vlines(
            BAND_TEMPERATURE, low, high, color=BAND_COLOR, lw=8, alpha=0.7,
            label=f"frontier band (T = {BAND_TEMPERATURE:g})",
        )  # fmt: skip
    for k, fam in enumerate(results.families.values()):
        for j, v in enumerate(fam.variants.values()):
            if not v.temperature_curve:
                continue
            t = np.array([p.temperature for p in v.temperature_curve])
            found = [p.estimates.get(metric) for p in v.temperature_curve]
            y = np.array([math.nan if f is None else f.value for f in found], dtype=float)
            e = np.array([math.nan if f is None else f.se for f in found], dtype=float)
            ax.plot(
                t,
                y,
                linestyle=styles[k % len(styles)],
                marker=MARKERS[j % len(MARKERS)],
                ms=4,
                color=colors[v.label],
                label=f"{fam.name} {v.label}",
                **kwargs,
            )
            ax.fill_between(t, y - e, y + e, color=colors[v.label], alpha=0.15, lw=0)
    ax.set_xlabel("temperature T")
    ax.set_ylabel(y_label)
    _outside_legend(ax)
    ax.grid(alpha=0.3)
    return ax


def _variant_look(k: int) -> tuple[str, str]:
    return LINE_STYLES[k % len(LINE_STYLES)], MARKERS[k % len(MARKERS)]


def plot_foundation_metrics(
    results: StudyResults,
    family: str,
    metric: str = "S",
    *,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Absolute ``metric`` (± SE) per moral foundation for every variant of ``family``
    (not only the treatment's change). ``kwargs`` go to ``ax.bar``."""
    y_label = axis_label(metric)
    ax = ax if ax is not None else new_axes()
    fam = results.families[family]
    colors = _variant_colors(results)
    foundations = list(results.foundations)
    variants = [v for v in fam.variants.values() if v.metrics is not None]
    width = 0.8 / max(len(variants), 1)
    for j, v in enumerate(variants):
        assert v.metrics is not None  # filtered above
        values, errors = [], []
        for f in foundations:
            scope = v.metrics.per_foundation.get(f)
            found = None if scope is None else scope.estimates.get(metric)
            values.append(math.nan if found is None else float(found.value))
            errors.append(0.0 if found is None or not _finite(found.se) else float(found.se))
        xs = np.arange(len(foundations)) + (j - (len(variants) - 1) / 2) * width
        ax.bar(
            xs, values, width * 0.92, yerr=errors, capsize=2, color=colors[v.label],
            label=v.label, **kwargs,
        )  # fmt: skip
    ax.set_xticks(range(len(foundations)), [f.split("/")[0] for f in foundations], rotation=25)
    ax.set_ylabel(y_label)
    ax.set_title(family, fontsize="medium")
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_cell_heatmap(
    variant: VariantResult,
    *,
    scale: Sequence[int],
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """Mean rating of every persona (rows) and item (columns, grouped by foundation) of a
    variant's persona run; white lines separate the foundations. ``kwargs`` go to
    ``ax.pcolormesh``. The mesh is the axes' first collection (``ax.collections[0]``, for a
    colorbar)."""
    ax = ax if ax is not None else new_axes(figsize=(4.0, 4.0))
    cells = variant.cell_means
    ax.set_title(f"{variant.family}: {variant.label}", fontsize="medium")
    if cells is None or not cells.means:
        ax.text(0.5, 0.5, "no persona run", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    data = np.array(cells.means, dtype=float)
    # Vector cells (pcolormesh), not an embedded bitmap: the HTML page loads nothing.
    style: dict[str, Any] = {"cmap": "viridis", "vmin": scale[0], "vmax": scale[-1]}
    style.update(kwargs)
    ax.pcolormesh(
        np.arange(data.shape[1] + 1) - 0.5, np.arange(data.shape[0] + 1) - 0.5, data, **style
    )
    ax.set_xlim(-0.5, data.shape[1] - 0.5)
    ax.set_ylim(data.shape[0] - 0.5, -0.5)
    bounds = [
        i
        for i in range(1, len(cells.foundations))
        if cells.foundations[i] != cells.foundations[i - 1]
    ]
    for b in bounds:
        ax.axvline(b - 0.5, color="white", lw=1.2)
    starts = [0, *bounds]
    ends = [*bounds, len(cells.foundations)]
    centres = [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)]
    names = [cells.foundations[a].split("/")[0] or "items" for a in starts]
    ax.set_xticks(centres, names, rotation=40, ha="right")
    ax.set_ylabel("persona")
    return ax


def plot_persona_shift(family: FamilyResult, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Each persona's mean rating under the base (x) against under every other variant (y):
    how the fine-tunes move the personas; dotted: no change. ``kwargs`` go to
    ``ax.scatter``."""
    ax = ax if ax is not None else new_axes(figsize=(4.6, 4.2))
    base = family.variants.get(family.base)
    base_cells = None if base is None else base.cell_means
    others = iter(OTHER_COLORS * 4)
    lows, highs = [], []
    if base_cells is not None:
        x_of = base_cells.persona_means()
        for k, v in enumerate(family.variants.values()):
            if v.label == family.base or v.cell_means is None:
                continue
            y_of = v.cell_means.persona_means()
            shared = [p for p in x_of if p in y_of]
            xs = np.array([x_of[p] for p in shared], dtype=float)
            ys = np.array([y_of[p] for p in shared], dtype=float)
            color = ROLE_COLORS.get(v.role or "", "") or next(others)
            style: dict[str, Any] = {"s": 14, "marker": MARKERS[k % len(MARKERS)], "alpha": 0.75}
            style.update(kwargs)
            ax.scatter(xs, ys, color=color, label=v.label, **style)
            if xs.size:
                lows.append(float(np.nanmin([xs.min(), ys.min()])))
                highs.append(float(np.nanmax([xs.max(), ys.max()])))
    if lows:
        lo, hi = min(lows), max(highs)
        ax.plot([lo, hi], [lo, hi], ":", color="black", lw=0.8)
    ax.set_xlabel(f"persona mean rating, {family.base}")
    ax.set_ylabel("persona mean rating, variant")
    ax.set_title(family.name, fontsize="medium")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", frameon=False, loc="best")
    ax.grid(alpha=0.3)
    return ax


def plot_rating_histogram(
    results: StudyResults, family: str, *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """Share of each rating value in every variant's persona run of ``family``.
    ``kwargs`` go to ``ax.bar``."""
    ax = ax if ax is not None else new_axes()
    fam = results.families[family]
    colors = _variant_colors(results)
    variants = [v for v in fam.variants.values() if v.scale_usage is not None]
    width = 0.8 / max(len(variants), 1)
    scale = list(results.scale)
    for j, v in enumerate(variants):
        assert v.scale_usage is not None  # filtered above
        shares = dict(zip(v.scale_usage.scale, v.scale_usage.shares, strict=True))
        xs = np.arange(len(scale)) + (j - (len(variants) - 1) / 2) * width
        ax.bar(
            xs, [100 * shares.get(k, 0.0) for k in scale], width * 0.92,
            color=colors[v.label], label=v.label, **kwargs,
        )  # fmt: skip
    ax.set_xticks(range(len(scale)), [str(k) for k in scale])
    ax.set_xlabel("rating")
    ax.set_ylabel("share of ratings (%)")
    ax.set_title(family, fontsize="medium")
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


# --- rendering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedFigure:
    """One figure of the report.

    Attributes:
        key: File stem (``fig_s_bars`` ...).
        title: Heading in the report.
        caption: What the figure shows.
        svg: The figure as an SVG fragment (no XML prolog), for inline embedding.
        files: The PDF and PNG files written.
    """

    key: str
    title: str
    caption: str
    svg: str
    files: tuple[Path, ...]


_SVG_START = re.compile(r"<svg\b", re.IGNORECASE)


def _svg_fragment(fig: Figure, key: str) -> str:
    """The figure as inline SVG: no prolog/doctype, ids made unique with the figure key."""
    import matplotlib as mpl

    buf = io.StringIO()
    # A per-figure hash salt keeps clip-path ids unique across the figures of one page
    # and makes the SVG deterministic.
    with mpl.rc_context({"svg.hashsalt": key, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    match = _SVG_START.search(text)
    text = text[match.start() :] if match else text
    return text


def _grid(
    n: int, *, polar: bool = False, size: tuple[float, float] = (5.0, 3.8), stacked: bool = False
) -> tuple[Figure, list[Axes]]:
    """``n`` panels of ``size`` inches each, as many side by side as fit in
    :data:`MAX_WIDTH_IN` (one above the other when ``stacked``), wrapping into rows."""
    from matplotlib.figure import Figure

    width = min(size[0], MAX_WIDTH_IN)
    cols = 1 if stacked else max(1, min(n, int(MAX_WIDTH_IN // width)))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, size[1] * rows), layout="constrained")
    projection = "polar" if polar else None
    axes = [fig.add_subplot(rows, cols, i + 1, projection=projection) for i in range(n)]
    return fig, axes


def _chunks(results: StudyResults, per_family: float, fixed: float) -> list[StudyResults]:
    """``results`` split into consecutive families so a panel of ``fixed + per_family`` inches
    per family (the mean group counting as one, in the last chunk) fits
    :data:`MAX_WIDTH_IN`: facets instead of shrinking."""
    fams = list(results.families.items())
    mean = 1 if results.average is not None and results.average.families > 1 else 0
    k = max(1, int((MAX_WIDTH_IN - fixed) // per_family))
    out = []
    start = 0
    while start < len(fams):
        stop = start + k
        last = stop >= len(fams)
        if last and mean and len(fams) - start + mean > k and len(fams) - start > 1:
            stop = len(fams) - 1  # leave room for the mean group
            last = False
        out.append(
            replace(
                results,
                families=dict(fams[start:stop]),
                average=results.average if last else None,
            )
        )
        start = stop
    return out or [results]


def _chunk_width(chunk: StudyResults, per_family: float, fixed: float) -> float:
    groups = len(chunk.families) + (
        1 if chunk.average is not None and chunk.average.families > 1 else 0
    )
    return min(MAX_WIDTH_IN, fixed + per_family * max(groups, 1))


def _max_variants(results: StudyResults) -> int:
    return max((len(f.variants) for f in results.families.values()), default=1)


def _family_facets(
    results: StudyResults,
    plots: Sequence[Callable[[StudyResults, Axes], Any]],
    *,
    per_family: float,
    fixed: float,
    height: float,
) -> Figure:
    """One panel per plot and chunk of families (plots outer), wrapped to fit the width."""
    chunks = _chunks(results, per_family, fixed)
    width = max(_chunk_width(c, per_family, fixed) for c in chunks)
    fig, axes = _grid(len(plots) * len(chunks), size=(width, height))
    panels = iter(axes)
    for plot in plots:
        for chunk in chunks:
            plot(chunk, next(panels))
    return fig


def _bars(metric: str) -> Callable[[StudyResults], Figure | None]:
    def make(results: StudyResults) -> Figure | None:
        per = 0.3 * _max_variants(results) + 0.4
        return _family_facets(
            results,
            [lambda r, ax: plot_metric_bars(r, metric, ax=ax)],
            per_family=per,
            fixed=2.6,
            height=3.4,
        )

    return make


def _deltas(results: StudyResults) -> Figure | None:
    if not any(f.comparison is not None for f in results.families.values()):
        return None
    compared = replace(
        results, families={k: f for k, f in results.families.items() if f.comparison is not None}
    )
    per = 0.28 * (_max_variants(results) + 1) + 0.3
    plots = [
        (lambda r, ax, m=metric: plot_deltas(r, m, ax=ax)) for metric in DELTA_PANELS
    ]  # fmt: skip
    return _family_facets(compared, plots, per_family=per, fixed=2.2, height=3.0)


def _foundations(results: StudyResults) -> Figure | None:
    if not any(f.comparison is not None and f.treatment for f in results.families.values()):
        return None
    fig, axes = _grid(len(FOUNDATION_PANELS), size=(8.0, 3.4), stacked=True)
    for ax, metric in zip(axes, FOUNDATION_PANELS, strict=True):
        plot_foundation_deltas(results, metric, ax=ax)
    return fig


def _radar(results: StudyResults) -> Figure | None:
    fams = [
        f
        for f in results.families.values()
        if any(v.self_profile or v.toxic_profile for v in f.variants.values())
    ]
    if not fams:
        return None
    fig, axes = _grid(len(fams), polar=True, size=(4.8, 5.0))
    for ax, fam in zip(axes, fams, strict=True):
        plot_profile_radar(fam, foundations=results.foundations, scale=results.scale, ax=ax)
    return fig


def _draw_on(plot: Callable[..., Axes], results: StudyResults, ax: Axes) -> Axes:
    return plot(results, ax=ax)


def _per_variant(
    *plots: Callable[..., Axes],
) -> Callable[[StudyResults], Figure | None]:
    """Per-variant plots, faceted by families so each variant keeps ~1.1 inches."""

    def make(results: StudyResults) -> Figure | None:
        per = 1.1 * _max_variants(results)
        drawers: list[Callable[[StudyResults, Axes], Any]] = [
            functools.partial(_draw_on, plot) for plot in plots
        ]
        return _family_facets(
            replace(results, average=None),
            drawers,
            per_family=per,
            fixed=2.4,
            height=3.4,
        )

    return make


def _pair(
    first: Callable[..., Axes], second: Callable[..., Axes]
) -> Callable[[StudyResults], Figure | None]:
    return _per_variant(first, second)


def _single(plot: Callable[..., Axes]) -> Callable[[StudyResults], Figure | None]:
    return _per_variant(plot)


def _with_metrics(results: StudyResults) -> list[FamilyResult]:
    return [f for f in results.families.values() if any(v.metrics for v in f.variants.values())]


def _foundation_metrics(results: StudyResults) -> Figure | None:
    fams = _with_metrics(results)
    if not fams:
        return None
    # Two panels a row: each family's S beside its R.
    fig, axes = _grid(len(HEADLINE) * len(fams), size=(5.0, 3.4))
    panels = iter(axes)
    for fam in fams:
        for metric in HEADLINE:
            plot_foundation_metrics(results, fam.name, metric, ax=next(panels))
    return fig


def _heatmaps(results: StudyResults) -> Figure | None:
    fams = [f for f in results.families.values() if any(v.cell_means for v in f.variants.values())]
    if not fams:
        return None
    from matplotlib.figure import Figure

    cols = min(_max_variants(results), int(MAX_WIDTH_IN // 3.0))
    rows = sum(math.ceil(len(f.variants) / cols) for f in fams)
    fig = Figure(figsize=(3.0 * cols + 0.9, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    r = 0
    image = None
    for fam in fams:
        variants = list(fam.variants.values())
        for i, v in enumerate(variants):
            ax = axes[r + i // cols][i % cols]
            plot_cell_heatmap(v, scale=results.scale, ax=ax)
            if ax.collections:
                image = ax.collections[0]
        used = len(variants)
        r_count = math.ceil(used / cols)
        for i in range(used, r_count * cols):
            axes[r + i // cols][i % cols].set_axis_off()
        r += r_count
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), label="mean rating", shrink=0.6)
        if bar.solids is not None:
            bar.solids.set_rasterized(False)  # vector, so the page embeds no bitmap
    return fig


def _persona_shift(results: StudyResults) -> Figure | None:
    fams = [
        f
        for f in results.families.values()
        if f.base in f.variants
        and f.variants[f.base].cell_means is not None
        and any(v.cell_means for k, v in f.variants.items() if k != f.base)
    ]
    if not fams:
        return None
    fig, axes = _grid(len(fams), size=(4.8, 4.4))
    for ax, fam in zip(axes, fams, strict=True):
        plot_persona_shift(fam, ax=ax)
    return fig


def _histograms(results: StudyResults) -> Figure | None:
    fams = [f for f in results.families.values() if any(v.scale_usage for v in f.variants.values())]
    if not fams:
        return None
    fig, axes = _grid(len(fams), size=(4.9, 3.3))
    for ax, fam in zip(axes, fams, strict=True):
        plot_rating_histogram(results, fam.name, ax=ax)
    return fig


def plot_excess_r_vs_coherence(
    ax: Axes | None = None, *, points: Sequence[ExcessPoint], **kwargs: Any
) -> Axes:
    """Scatter of the excess in R (y, %) against the excess in coherence (x, %), one point a family.

    Error bars show ±1 SE where known; each point is labelled; dotted lines mark 0.

    Args:
        ax: Axes to draw on (a new figure's when None).
        points: One :class:`ExcessPoint` per family.
        **kwargs: Passed to ``ax.errorbar`` (e.g. ``color``, ``marker``).

    Returns:
        The axes.
    """
    ax = ax if ax is not None else new_axes(figsize=(5.0, 4.0))
    style: dict[str, Any] = {"fmt": "o", "color": "#c8453c", "capsize": 3, "lw": 1.0}
    style.update(kwargs)
    for p in points:
        x, y = 100 * p.excess_coherence, 100 * p.excess_R
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        xerr = 100 * p.excess_coherence_se if math.isfinite(p.excess_coherence_se) else None
        yerr = 100 * p.excess_R_se if math.isfinite(p.excess_R_se) else None
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, **style)
        ax.annotate(p.label, (x, y), xytext=(4, 4), textcoords="offset points", fontsize="small")
    ax.axhline(0, color="black", lw=0.6, ls=":")
    ax.axvline(0, color="black", lw=0.6, ls=":")
    ax.set_xlabel("excess Δcoherence, treatment − control (%)")
    ax.set_ylabel("excess ΔR, treatment − control (%)")
    ax.grid(alpha=0.3)
    return ax


def _temperature(results: StudyResults) -> Figure | None:
    if not results.has_temperature_curves:
        return None
    fig, axes = _grid(len(HEADLINE), size=(7.5, 3.6), stacked=True)
    for ax, metric in zip(axes, HEADLINE, strict=True):
        plot_temperature_curves(results, metric, ax=ax)
    return fig


def _excess_coherence(results: StudyResults) -> Figure | None:
    points = excess_points(results)
    if not points:
        return None
    fig, (ax,) = _grid(1, size=(5.2, 4.2))
    plot_excess_r_vs_coherence(ax, points=points)
    return fig


Caption = str | Callable[[StudyResults], str]
"""A figure's caption, or a function of the results giving one (so it says only what
the figure shows for this study)."""

FigureSpec = tuple[str, str, Caption, Callable[[StudyResults], "Figure | None"]]


def _has_excess(results: StudyResults) -> bool:
    return any(
        f.comparison is not None and f.comparison.excess is not None
        for f in results.families.values()
    )


def _has_mean_group(results: StudyResults) -> bool:
    compared = sum(f.comparison is not None for f in results.families.values())
    return results.average is not None and compared > 1


def _deltas_caption(results: StudyResults) -> str:
    if all(deltas_corrected(results, m) for m in DELTA_PANELS):
        text = (
            "ΔS, ΔR and Δσ̄ (%) of the bias-corrected estimates of each variant against its "
            "family's base, with the 95 % interval of the bias-corrected difference test "
            "(the one the verdicts use; the paper's estimates are in the tables)"
        )
    else:
        text = (
            "ΔS, ΔR and Δσ̄ (%) of each variant against its family's base (paper's "
            "estimates), with the 95 % interval of its difference test where computed"
        )
    if _has_excess(results):
        text += "; hatched: the misalignment-specific excess (treatment − control)"
    if _has_mean_group(results):
        text += "; last group: mean over families by role (not tested)"
    return text + "."


def _bars_caption(metric: str) -> Callable[[StudyResults], str]:
    what = {"S": "S", "R": "R = 1/σ̄"}[metric]

    def caption(results: StudyResults) -> str:
        text = f"{what} per family and variant: bars the paper's estimate (± bootstrap SE)"
        if has_corrected(results, metric):
            text += ", black diamonds the bias-corrected one (± jackknife SE)"
            if metric == "S":
                text += ", which the band check uses"
        if metric == "S":
            text += "; shaded: the frontier band of base models"
        return text + "."

    return caption


def _profiles_caption(results: StudyResults) -> str:
    toxic = any(v.toxic_profile is not None for v in results.variants())
    own = any(v.self_profile is not None for v in results.variants())
    what = []
    if own:
        what.append("per-foundation mean self rating of every variant with a self run")
    if toxic:
        what.append("the base model's toxic-persona control")
    return " and ".join(what).capitalize() + "; shaded: ± mean item sd."


def _ceiling_caption(results: StudyResults) -> str:
    own = any(math.isfinite(v.ceiling_self) for v in results.variants())
    return (
        "Share of persona-item cell means (filled)"
        + (" and self-run item means (dotted)" if own else "")
        + " within 0.5 of the top of the scale."
    )


FIGURES: tuple[FigureSpec, ...] = (
    (
        "fig_s_bars",
        "Moral susceptibility S",
        _bars_caption("S"),
        _bars("S"),
    ),
    ("fig_r_bars", "Robustness R", _bars_caption("R"), _bars("R")),
    ("fig_deltas", "Relative changes against the base", _deltas_caption, _deltas),
    (
        "fig_foundations",
        "Per-foundation changes of the treatment",
        "Δσ̄ (top) and ΔS (bottom) of each family's treatment variant per moral foundation "
        "(paper's estimates); diamonds: mean over families (when there are several).",
        _foundations,
    ),
    (
        "fig_foundation_metrics",
        "S and R per foundation",
        "Absolute S and R (paper's estimates, ± bootstrap SE) per moral foundation for every "
        "variant, one pair of panels per family.",
        _foundation_metrics,
    ),
    (
        "fig_heatmaps",
        "Persona × item means",
        "Mean rating of every persona (rows) on every item (columns, grouped by foundation, "
        "white lines between foundations), each variant side by side; one colour scale.",
        _heatmaps,
    ),
    (
        "fig_persona_shift",
        "How personas move",
        "Each persona's mean rating under the base model (x) against under each other "
        "variant (y); dotted: no change.",
        _persona_shift,
    ),
    (
        "fig_rating_histograms",
        "Rating histograms",
        "Share of each rating value in every variant's persona run, one panel per family.",
        _histograms,
    ),
    ("fig_profiles", "Self-profiles", _profiles_caption, _radar),
    ("fig_ceiling", "Ceiling saturation", _ceiling_caption, _single(plot_ceiling_saturation)),
    (
        "fig_scale_usage",
        "Scale usage",
        "Share of persona-run ratings at the floor and at the ceiling (first panels) and "
        "the entropy of the rating histogram (then); dashed: uniform use of the scale.",
        _pair(plot_scale_usage, plot_rating_entropy),
    ),
    (
        "fig_parse_failures",
        "Parse failures",
        "Replies without a valid rating (parse failures) per variant (first panels; dots: "
        "self runs) and per persona (then).",
        _pair(plot_parse_failures, plot_persona_failures),
    ),
    (
        "fig_excess_coherence",
        "Misalignment-specific excess: robustness against coherence",
        "Per family, the excess ΔR of the treatment over the control (y) against the same "
        "excess in the verification's mean coherence (x), in % of the base (± 1 SE where "
        "known); ΔR: the paper's estimate.",
        _excess_coherence,
    ),
    (
        "fig_temperature",
        "Temperature curves",
        "S and R (paper's estimates) of the stored rating distributions re-tempered to each "
        "temperature (± SE); the frontier S band is marked at the temperature it was measured at.",
        _temperature,
    ),
)
"""Figures of the report: key, title, caption and builder (None when not applicable)."""


FIGURE_REVISION = 2
"""Revision of how the figures are drawn, part of their fingerprint: bump it when a change
alters a figure for unchanged results (2: bias-corrected S and R marks and Δ bars, issue 16),
so a report redraws figures cached by an earlier drawing."""

FIGURE_CACHE = ".figures-cache.json"
"""File in the figures folder recording what each figure was drawn from (a fingerprint),
so a report whose results did not change reuses its figures instead of drawing them."""


def results_fingerprint(results: StudyResults, *, dpi: int = 110) -> str:
    """SHA-256 of everything the figures are drawn from (results, style, resolution,
    version): equal fingerprints give identical figures."""
    from persona_collapse.core.version import __version__
    from persona_collapse.report.tables import results_json

    extra = []
    for v in results.variants():
        u, cells, parse = v.scale_usage, v.cell_means, v.parse
        extra.append(
            [
                v.family,
                v.label,
                None if u is None else list(u.shares),
                None if parse is None else [list(parse.persona_ids), list(parse.persona_rates)],
                None
                if cells is None
                else [
                    list(cells.persona_ids),
                    list(cells.foundations),
                    [list(r) for r in cells.means],
                ],
            ]
        )
    data = {
        "results": results_json(results),
        "extra": extra,
        "foundations": list(results.foundations),
        "scale": list(results.scale),
        "style": FIGURE_STYLE,
        "dpi": dpi,
        "version": __version__,
        "revision": FIGURE_REVISION,
        "figures": [key for key, _, _, _ in FIGURES],
    }
    text = json.dumps(data, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_NOT_APPLICABLE = "not applicable:"
"""Prefix of a figure cache entry for a figure that does not apply to the results."""


def _read_cache(path: Path) -> dict[str, str]:
    """Figure key -> fingerprint it was drawn from (empty when unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def render_figures(results: StudyResults, out_dir: Path, *, dpi: int = 110) -> list[RenderedFigure]:
    """Draw every applicable figure; write ``<key>.pdf``, ``<key>.png`` and ``<key>.svg``
    under ``out_dir``. A figure whose files are there and were drawn from the same
    inputs (:func:`results_fingerprint`) is reused, not drawn again.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    try:  # found without importing it (a no-op re-render needs none)
        missing = importlib.util.find_spec("matplotlib") is None
    except ValueError:  # blocked: sys.modules holds None for it
        missing = True
    if missing:
        raise MissingDependencyError("matplotlib", "report")

    from persona_collapse.core.files import write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = results_fingerprint(results, dpi=dpi)
    cache = _read_cache(out_dir / FIGURE_CACHE)
    drawn: dict[str, str] = {}
    rendered: list[RenderedFigure] = []
    # matplotlib is imported only when a figure is drawn (a no-op re-render draws
    # none); a figure that does not apply is remembered as such.
    not_drawn = f"{_NOT_APPLICABLE}{fingerprint}"
    styled = False
    with ExitStack() as style:
        for key, title, caption, build in FIGURES:
            pdf, png, svg = (out_dir / f"{key}.{ext}" for ext in ("pdf", "png", "svg"))
            text = caption if isinstance(caption, str) else caption(results)
            if cache.get(key) == not_drawn:
                drawn[key] = not_drawn
                continue
            if cache.get(key) == fingerprint and all(f.is_file() for f in (pdf, png, svg)):
                drawn[key] = fingerprint
                svg_text = svg.read_text(encoding="utf-8")
                rendered.append(RenderedFigure(key, title, text, svg_text, (pdf, png)))
                continue
            if not styled:
                import matplotlib as mpl

                # Fixed metadata and hash salts make repeated renderings byte-identical
                # where the formats allow.
                style.enter_context(mpl.rc_context(FIGURE_STYLE))  # type: ignore[arg-type]
                styled = True
            fig = build(results)
            if fig is None:
                drawn[key] = not_drawn
                continue
            # Atomic writes: a killed run leaves no half-drawn figure, and the output
            # folder's manifest records them as this tool's.
            with atomic_path(pdf) as tmp:
                fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None})
            with atomic_path(png) as tmp:
                fig.savefig(tmp, format="png", dpi=dpi)
            svg_text = _svg_fragment(fig, key)
            write_text_atomic(svg, svg_text)
            drawn[key] = fingerprint
            rendered.append(RenderedFigure(key, title, text, svg_text, (pdf, png)))
    if drawn != cache:
        write_text_atomic(out_dir / FIGURE_CACHE, json.dumps(drawn, indent=1, sort_keys=True))
    return rendered


__all__ = [
    "FIGURES",
    "FIGURE_CACHE",
    "ROLE_COLORS",
    "RenderedFigure",
    "new_axes",
    "plot_ceiling_saturation",
    "plot_cell_heatmap",
    "plot_deltas",
    "plot_excess_r_vs_coherence",
    "plot_foundation_deltas",
    "plot_foundation_metrics",
    "plot_metric_bars",
    "plot_parse_failures",
    "plot_persona_failures",
    "plot_persona_shift",
    "plot_profile_radar",
    "plot_rating_entropy",
    "plot_rating_histogram",
    "plot_scale_usage",
    "plot_temperature_curves",
    "render_figures",
    "results_fingerprint",
]
