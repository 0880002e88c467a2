"""Figures of a study (matplotlib, object-oriented API: no pyplot, no global state).

Every ``plot_*`` function draws on ``ax`` (a new figure's axes when None), passes
``**kwargs`` to the main artist and returns the axes; none calls ``show``.
:func:`render_figures` lays them out, writes each figure as PDF and PNG and
keeps an SVG rendering for the HTML report.

Colours follow the variant's role: base blue, control green, treatment red,
other variants purple/brown, the toxic-persona control black.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persona_collapse.core.errors import MissingDependencyError
from persona_collapse.core.files import atomic_path
from persona_collapse.report.model import FamilyResult, StudyResults, VariantResult, excess_points
from persona_collapse.report.verification import ExcessPoint
from persona_collapse.stats.compare import Change
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
    ax.set_xticks(range(len(families)), [f.name for f in families])
    ax.set_ylabel(y_label)
    ax.set_xlim(-0.6, len(families) - 0.4)
    _outside_legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_deltas(
    results: StudyResults, metric: str = "S", *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """Relative change (%) of ``metric`` against the base, per family and variant, with the
    excess (treatment − control) hatched and the mean over families. ``kwargs`` go to ``ax.bar``."""
    axis_label(metric)  # validates the name
    ax = ax if ax is not None else new_axes()
    colors = _variant_colors(results)
    groups: list[tuple[str, list[tuple[str, float, str, bool]]]] = []
    for fam in results.families.values():
        cmp = fam.comparison
        if cmp is None:
            continue
        bars = [
            (label, 100 * _change_of(ch.overall, metric), colors.get(label, OTHER_COLORS[0]), False)
            for label, ch in cmp.variants.items()
        ]
        if cmp.excess is not None:
            bars.append(("excess", 100 * _change_of(cmp.excess.overall, metric), "#888888", True))
        groups.append((fam.name, bars))
    avg = results.average
    if avg is not None and len(groups) > 1:
        # Pooled by role: coloured like the roles' variants, no legend entries of its own.
        bars = [
            ("", 100 * _change_of(ch.overall, metric), ROLE_COLORS.get(role, "#888888"), False)
            for role, ch in avg.variants.items()
        ]
        if avg.excess is not None:
            bars.append(("excess", 100 * _change_of(avg.excess.overall, metric), "#888888", True))
        groups.append((f"mean of {avg.families}\n(by role)", bars))
    seen: set[str] = set()
    for i, (_, bars) in enumerate(groups):
        width = 0.8 / max(len(bars), 1)
        for j, (label, value, color, hatched) in enumerate(bars):
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
            seen.add(label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups])
    ax.set_ylabel(f"{delta(metric)} vs base (%)")
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
    for v in family.variants.values():
        if v.self_profile is not None:
            color = ROLE_COLORS.get(v.role or "", "") or next(others)
            profiles.append((f"{v.label} (self)", v.self_profile, color, "-"))
    base = family.variants.get(family.base)
    if base is not None and base.toxic_profile is not None:
        profiles.append(("toxic personas", base.toxic_profile, TOXIC_COLOR, "--"))
    for label, profile, color, style in profiles:
        mean = np.array([profile.mean.get(f, math.nan) for f in foundations], dtype=float)
        sd = np.array([profile.sd.get(f, math.nan) for f in foundations], dtype=float)
        sd = np.nan_to_num(sd)
        ax.plot(closed, np.append(mean, mean[:1]), style, color=color, label=label, **kwargs)
        low, high = np.clip(mean - sd, scale[0], scale[-1]), np.clip(mean + sd, scale[0], scale[-1])
        ax.fill_between(
            closed,
            np.append(low, low[:1]),
            np.append(high, high[:1]),
            color=color,
            alpha=0.12,
            lw=0,
        )
    ax.set_xticks(angles, [f.split("/")[0] for f in foundations], fontsize="small")
    ax.set_ylim(scale[0], scale[-1])
    ax.set_title(family.name, fontsize="medium")
    ax.legend(fontsize="x-small", frameon=False, loc="upper right", bbox_to_anchor=(1.35, 1.12))
    return ax


def _variant_ticks(ax: Axes, variants: Sequence[VariantResult]) -> None:
    ax.set_xticks(
        range(len(variants)), [f"{v.family}\n{v.label}" for v in variants], fontsize="small"
    )


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
    styles = ("-", "--", ":", "-.")
    if metric == "S":
        low, high = results.band
        ax.axhspan(low, high, color=BAND_COLOR, alpha=0.3, lw=0, label="frontier band")
    for k, fam in enumerate(results.families.values()):
        for v in fam.variants.values():
            if not v.temperature_curve:
                continue
            t = np.array([p.temperature for p in v.temperature_curve])
            found = [p.estimates.get(metric) for p in v.temperature_curve]
            y = np.array([math.nan if f is None else f.value for f in found], dtype=float)
            e = np.array([math.nan if f is None else f.se for f in found], dtype=float)
            ax.plot(
                t,
                y,
                styles[k % len(styles)],
                marker="o",
                ms=3,
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
    """``n`` panels of ``size`` inches each, side by side (or one above the other)."""
    from matplotlib.figure import Figure

    rows, cols = (n, 1) if stacked else (1, n)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    projection = "polar" if polar else None
    axes = [fig.add_subplot(rows, cols, i + 1, projection=projection) for i in range(n)]
    return fig, axes


FigureSpec = tuple[str, str, str, Callable[[StudyResults], "Figure | None"]]


def _bars(metric: str) -> Callable[[StudyResults], Figure | None]:
    def make(results: StudyResults) -> Figure | None:
        fig, (ax,) = _grid(1, size=(max(5.0, 1.6 * len(results.families) + 2.5), 3.8))
        plot_metric_bars(results, metric, ax=ax)
        return fig

    return make


def _deltas(results: StudyResults) -> Figure | None:
    if not any(f.comparison is not None for f in results.families.values()):
        return None
    fig, axes = _grid(len(DELTA_PANELS), size=(max(4.2, 1.3 * len(results.families) + 2.0), 3.6))
    for ax, metric in zip(axes, DELTA_PANELS, strict=True):
        plot_deltas(results, metric, ax=ax)
    return fig


def _foundations(results: StudyResults) -> Figure | None:
    if not any(f.comparison is not None and f.treatment for f in results.families.values()):
        return None
    fig, axes = _grid(len(FOUNDATION_PANELS), size=(5.6, 3.8))
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
    fig, axes = _grid(len(fams), polar=True, size=(4.6, 4.4))
    for ax, fam in zip(axes, fams, strict=True):
        plot_profile_radar(fam, foundations=results.foundations, scale=results.scale, ax=ax)
    return fig


def _pair(
    first: Callable[..., Axes], second: Callable[..., Axes]
) -> Callable[[StudyResults], Figure | None]:
    def make(results: StudyResults) -> Figure | None:
        n = len(results.variants())
        width = max(5.0, 0.9 * n + 1.5)
        # Many variants: panels one above the other, so the page need not shrink them.
        fig, axes = _grid(2, size=(width, 3.4 if n > 6 else 3.8), stacked=n > 6)
        first(results, ax=axes[0])
        second(results, ax=axes[1])
        return fig

    return make


def _single(plot: Callable[..., Axes]) -> Callable[[StudyResults], Figure | None]:
    def make(results: StudyResults) -> Figure | None:
        fig, (ax,) = _grid(1, size=(max(5.0, 0.9 * len(results.variants()) + 1.5), 3.8))
        plot(results, ax=ax)
        return fig

    return make


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
    ax.set_xlabel("excess Δcoherence, insecure − secure (%)")
    ax.set_ylabel("excess ΔR, insecure − secure (%)")
    ax.grid(alpha=0.3)
    return ax


def _temperature(results: StudyResults) -> Figure | None:
    if not results.has_temperature_curves:
        return None
    fig, axes = _grid(len(HEADLINE), size=(5.2, 3.8))
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


FIGURES: tuple[FigureSpec, ...] = (
    (
        "fig_s_bars",
        "Moral susceptibility S",
        "S per family and variant (± bootstrap SE); shaded: the frontier band of base models.",
        _bars("S"),
    ),
    ("fig_r_bars", "Robustness R", "R = 1/σ̄ per family and variant (± bootstrap SE).", _bars("R")),
    (
        "fig_deltas",
        "Relative changes against the base",
        "ΔS, ΔR and Δσ̄ (%) of each variant against its family's base; hatched: the "
        "misalignment-specific excess (treatment − control); last group: mean over families "
        "by role.",
        _deltas,
    ),
    (
        "fig_foundations",
        "Per-foundation changes of the treatment",
        "Δσ̄ (left) and ΔS (right) of each family's treatment variant per moral foundation; "
        "diamonds: mean over families.",
        _foundations,
    ),
    (
        "fig_profiles",
        "Self-profiles",
        "Per-foundation mean self rating of every variant and the base model's toxic-persona "
        "control; shaded: ± mean item sd.",
        _radar,
    ),
    (
        "fig_ceiling",
        "Ceiling saturation",
        "Share of persona-item cell means (filled) and self-run item means (dotted) within 0.5 of "
        "the top of the scale.",
        _single(plot_ceiling_saturation),
    ),
    (
        "fig_scale_usage",
        "Scale usage",
        "Share of persona-run ratings at the floor and at the ceiling (first panel) and "
        "the entropy of the rating histogram (second panel).",
        _pair(plot_scale_usage, plot_rating_entropy),
    ),
    (
        "fig_parse_failures",
        "Parse failures",
        "Answers without a valid rating per variant (first panel) and per persona (second).",
        _pair(plot_parse_failures, plot_persona_failures),
    ),
    (
        "fig_excess_coherence",
        "Misalignment-specific excess: robustness against coherence",
        "Per family, the excess ΔR of the treatment over the control (y) against the same "
        "excess in the verification's mean coherence (x), in % of the base (± 1 SE where "
        "known).",
        _excess_coherence,
    ),
    (
        "fig_temperature",
        "Temperature curves",
        "S and R of the stored rating distributions re-tempered to each temperature (± SE).",
        _temperature,
    ),
)
"""Figures of the report: key, title, caption and builder (None when not applicable)."""


def render_figures(results: StudyResults, out_dir: Path, *, dpi: int = 110) -> list[RenderedFigure]:
    """Draw every applicable figure; write ``<key>.pdf`` and ``<key>.png`` under ``out_dir``.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    _require_matplotlib()
    import matplotlib as mpl

    out_dir.mkdir(parents=True, exist_ok=True)
    rendered: list[RenderedFigure] = []
    # Fixed metadata and hash salts make repeated renderings byte-identical where
    # the formats allow.
    style = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
    with mpl.rc_context(style):  # type: ignore[arg-type]
        for key, title, caption, build in FIGURES:
            fig = build(results)
            if fig is None:
                continue
            pdf, png = out_dir / f"{key}.pdf", out_dir / f"{key}.png"
            # Atomic writes: a killed run leaves no half-drawn figure, and the output
            # folder's manifest records them as this tool's.
            with atomic_path(pdf) as tmp:
                fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None})
            with atomic_path(png) as tmp:
                fig.savefig(tmp, format="png", dpi=dpi)
            rendered.append(
                RenderedFigure(key, title, caption, _svg_fragment(fig, key), (pdf, png))
            )
    return rendered


__all__ = [
    "FIGURES",
    "ROLE_COLORS",
    "RenderedFigure",
    "new_axes",
    "plot_ceiling_saturation",
    "plot_deltas",
    "plot_excess_r_vs_coherence",
    "plot_foundation_deltas",
    "plot_metric_bars",
    "plot_parse_failures",
    "plot_persona_failures",
    "plot_profile_radar",
    "plot_rating_entropy",
    "plot_scale_usage",
    "plot_temperature_curves",
    "render_figures",
]
