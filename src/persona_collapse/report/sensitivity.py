"""Report of the sensitivity suite: the robustness figure and the report section.

:func:`plot_robustness` draws, for one metric, the change of every variant against its
base under every condition (headline first) with its confidence interval: filled
markers are significant after Holm, hollow ones are not; a condition under which a
treatment's headline does not hold (it flips, loses or gains significance) has its label
in red. :func:`render_section` is the HTML section of the study report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_collapse.core.files import atomic_path
from persona_collapse.report.figures import FIGURE_STYLE, OTHER_COLORS, new_axes
from persona_collapse.stats.sensitivity import METRICS, SensitivityResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FAILED_COLOR = "#b2182b"
"""Colour of condition labels under which a treatment's headline does not hold."""


def plot_robustness(
    result: SensitivityResult, metric: str = "S", *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """Δ``metric`` (%) with its CI per condition (rows) and variant (colours).

    ``kwargs`` go to ``ax.errorbar``.

    Raises:
        ValueError: ``metric`` is not one the result checks.
    """
    rows = [r for r in result.rows if r.metric == metric]
    if not rows:
        raise ValueError(
            f"metric {metric!r} has no rows; checked: {sorted({r.metric for r in result.rows})}"
        )
    ax = ax if ax is not None else new_axes()
    conditions = list(result.conditions)
    variants = list(dict.fromkeys(f"{r.family}/{r.variant}" for r in rows))
    colors = {v: OTHER_COLORS[k % len(OTHER_COLORS)] for k, v in enumerate(variants)}
    step = 0.8 / max(len(variants), 1)
    for k, variant in enumerate(variants):
        mine = {r.condition: r for r in rows if f"{r.family}/{r.variant}" == variant}
        for i, cond in enumerate(conditions):
            r = mine.get(cond)
            if r is None or not math.isfinite(r.estimate):
                continue
            y = i + (k - (len(variants) - 1) / 2) * step
            low, high = 100 * (r.estimate - r.ci_low), 100 * (r.ci_high - r.estimate)
            ax.errorbar(
                [100 * r.estimate],
                [y],
                xerr=[[max(low, 0.0)], [max(high, 0.0)]],
                color=colors[variant],
                marker="o",
                ms=5,
                capsize=2,
                markerfacecolor=colors[variant] if r.significant else "white",
                **kwargs,
            )
    ax.axvline(0.0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(conditions)))
    decisive = {(v.family, v.variant) for v in result.decisive}
    failed = {r.condition for r in rows if not r.holds and (r.family, r.variant) in decisive}
    ax.set_yticklabels([c.label for c in conditions])
    for tick, cond in zip(ax.get_yticklabels(), conditions, strict=True):
        if cond in failed:
            tick.set_color(FAILED_COLOR)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ{'σ̄' if metric == 'sigma_bar' else metric} vs base (%)")
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.lines import Line2D

    # Proxy handles: one filled marker per variant, and what a hollow marker means.
    handles = [Line2D([], [], color=c, marker="o", ms=5, label=v) for v, c in colors.items()]
    handles.append(
        Line2D([], [], color="0.4", marker="o", ms=5, markerfacecolor="white", linestyle="none",
               label="not significant (Holm)")
    )  # fmt: skip
    ax.legend(
        handles=handles,
        fontsize=8,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=2,
    )
    return ax


def robustness_figure(result: SensitivityResult, *, metrics: Sequence[str] = METRICS) -> Figure:
    """One panel per metric (ΔS, ΔR), side by side."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    new_axes(figsize=(1, 1))  # raises MissingDependencyError without matplotlib
    height = 1.8 + 0.35 * max(len(result.conditions), 1)
    fig = Figure(figsize=(4.2 * len(metrics), height), layout="constrained")
    with mpl.rc_context(FIGURE_STYLE):  # type: ignore[arg-type]
        for k, metric in enumerate(metrics):
            ax = fig.add_subplot(1, len(metrics), k + 1)
            plot_robustness(result, metric, ax=ax)
            ax.set_title(f"Δ{metric} of every variant under every condition", fontsize=9)
    return fig


def write_robustness_figure(result: SensitivityResult, path: str | Path, *, dpi: int = 150) -> Path:
    """Draw :func:`robustness_figure` and write it to ``path`` (PNG, PDF or SVG), atomically."""
    import matplotlib as mpl

    dest = Path(path)
    with mpl.rc_context(FIGURE_STYLE):  # type: ignore[arg-type]
        fig = robustness_figure(result)
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format=dest.suffix.lower().lstrip(".") or "png", dpi=dpi)
    return dest


def robustness_svg(result: SensitivityResult) -> str | None:
    """:func:`robustness_figure` as an inline SVG fragment; None without matplotlib."""
    from persona_collapse.core.errors import MissingDependencyError
    from persona_collapse.report.figures import _svg_fragment

    try:
        fig = robustness_figure(result)
    except MissingDependencyError:
        return None
    return _svg_fragment(fig, "fig_robustness")


def _pct(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:+.1f} %"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def render_section(
    result: SensitivityResult | None,
    *,
    table: Callable[[Sequence[str], Sequence[Sequence[str]]], Any],
    esc: Callable[[Any], str],
    figures: bool = True,
) -> str:
    """The report's "Robustness of the finding" section (empty without a result).

    Args:
        result: The suite's result.
        table: The report's table renderer (headers, rows of escaped cells).
        esc: The report's HTML escaper.
        figures: Embed the robustness figure (inline SVG; skipped without matplotlib).
    """
    if result is None:
        return ""
    parts = [f"<p><strong>{esc(result.summary())}</strong></p>"]
    verdicts = [
        [
            f"{r.family}/{r.variant}",
            f"Δ{r.metric}",
            _pct(r.headline.estimate),
            "yes" if r.headline.significant else "no",
            ("robust" if r.robust else "fragile") if r.rows else "—",
            "; ".join(f"{x.status} under {x.condition.label}" for x in r.failures) or "—",
        ]
        for r in result.robustness
    ]
    parts.append(
        str(
            table(
                ["variant", "metric", "headline", "significant", "verdict", "fails under"],
                verdicts,
            )
        )
    )
    rows = [
        [
            f"{r.family}/{r.variant}",
            r.condition.label,
            f"Δ{r.metric}",
            _pct(r.estimate),
            f"{_pct(r.ci_low)} to {_pct(r.ci_high)}",
            _p(r.p_holm),
            str(r.n_personas),
            r.status,
        ]
        for r in result.rows
    ]
    parts.append(
        str(
            table(
                [
                    "variant",
                    "condition",
                    "metric",
                    "change",
                    "95 % CI",
                    "p (Holm)",
                    "personas",
                    "status",
                ],
                rows,
            )
        )
    )
    if figures:
        svg = robustness_svg(result)
        if svg is not None:
            parts.append(f"<figure>{svg}</figure>")
    parts.append(
        f'<p class="muted">Each condition changes one factor of the protocol (template, item '
        f"order, persona sample, temperature); every variant is compared with its base under "
        f"the same condition (paired persona bootstrap, {result.n_boot} draws, seed "
        f"{result.seed}; Holm across families within a condition; α = {result.alpha:g}). "
        "Files: <code>sensitivity/robustness.csv</code>, <code>.json</code>, <code>.png</code>.</p>"
    )
    if result.skipped:
        skipped = "; ".join(f"{k}: {v}" for k, v in result.skipped.items())
        parts.append(f'<p class="muted">Not tested: {esc(skipped)}</p>')
    return "\n".join(parts)


__all__ = [
    "FAILED_COLOR",
    "plot_robustness",
    "render_section",
    "robustness_figure",
    "robustness_svg",
    "write_robustness_figure",
]
