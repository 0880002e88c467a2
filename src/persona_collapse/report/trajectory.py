"""Checkpoint trajectories in figures (statistics against training step, one line per run)
and in the report's "Training trajectories" section (:func:`trajectory_report`,
:func:`render_section`).

Follows :mod:`persona_collapse.report.figures`: ``plot_*`` functions draw on ``ax`` (new
axes when None), pass ``**kwargs`` to the line and return the axes. Intermediate
checkpoints are filled markers; the endpoints (step 0 = the base, the final step =
the published variant) are hollow markers, since they are runs of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persona_collapse.core.errors import MissingDependencyError, UserError
from persona_collapse.core.files import atomic_path
from persona_collapse.core.formatting import fmt_pm
from persona_collapse.report.figures import OTHER_COLORS, axis_label, new_axes
from persona_collapse.report.model import TrajectoryReport
from persona_collapse.stats.registry import get_statistic
from persona_collapse.stats.trajectory import Trajectory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TRAJECTORY_PANELS: tuple[str, ...] = ("R", "S", "entropy_bits")
"""Statistics of :func:`trajectory_figure`, left to right."""

XAxis = Literal["step", "fraction"]

FIGURE_SUFFIXES = frozenset({".png", ".pdf", ".svg"})
"""File types :func:`write_trajectory_figure` writes."""


def _x(traj: Trajectory, x: XAxis) -> np.ndarray:
    if x == "fraction":
        return np.array(
            [
                math.nan if p.fraction_of_training is None else p.fraction_of_training
                for p in traj.points
            ]
        )
    return np.array([p.step for p in traj.points], dtype=float)


def plot_trajectory(
    trajectories: Mapping[str, Trajectory],
    metric: str = "S",
    *,
    x: XAxis = "step",
    colors: Mapping[str, str] | None = None,
    ax: Axes | None = None,
    **kwargs: Any,
) -> Axes:
    """``metric`` ± SE against step (or fraction of training), one line per run.

    Endpoints are hollow markers. ``kwargs`` go to ``ax.errorbar``.

    Raises:
        ValueError: ``metric`` is not a registered statistic or ``x`` is unknown.
    """
    if x not in ("step", "fraction"):
        raise ValueError(f"x must be 'step' or 'fraction', got {x!r}")
    y_label = axis_label(metric)
    ax = ax if ax is not None else new_axes()
    palette = iter(OTHER_COLORS * 4)
    for label, traj in trajectories.items():
        color = (colors or {}).get(label) or next(palette)
        xs = _x(traj, x)
        found = [p.metrics.estimates.get(metric) for p in traj.points]
        ys = np.array([math.nan if f is None else f.value for f in found], dtype=float)
        es = np.array([0.0 if f is None or not math.isfinite(f.se) else f.se for f in found])
        ax.errorbar(
            xs, ys, yerr=es, color=color, marker="o", ms=4, capsize=2, label=label, **kwargs
        )
        ends = [k for k, p in enumerate(traj.points) if p.role != "intermediate"]
        ax.plot(
            xs[ends],
            ys[ends],
            linestyle="none",
            marker="o",
            ms=8,
            markerfacecolor="white",
            markeredgecolor=color,
            markeredgewidth=1.5,
            zorder=3,
            label=f"{label} endpoints" if len(trajectories) > 1 else "endpoints",
        )
    ax.set_xlabel("fraction of training" if x == "fraction" else "training step")
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return ax


def trajectory_figure(
    trajectories: Mapping[str, Trajectory],
    *,
    metrics: Sequence[str] = TRAJECTORY_PANELS,
    x: XAxis = "step",
) -> Figure:
    """One panel per statistic (default R, S and entropy), side by side."""
    from matplotlib.figure import Figure

    new_axes(figsize=(1, 1))  # raises MissingDependencyError without matplotlib
    fig = Figure(figsize=(4.2 * len(metrics), 3.6), layout="constrained")
    with _style():
        for k, metric in enumerate(metrics):
            ax = fig.add_subplot(1, len(metrics), k + 1)
            plot_trajectory(trajectories, metric, x=x, ax=ax)
    return fig


def _style() -> Any:
    import matplotlib as mpl

    return mpl.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})


def write_trajectory_figure(
    trajectories: Mapping[str, Trajectory], path: str | Path, *, x: XAxis = "step", dpi: int = 150
) -> Path:
    """Draw :func:`trajectory_figure` and write it to ``path`` (PNG, PDF or SVG), atomically.

    Raises:
        UserError: unsupported file type.
        InputFileError: the file cannot be written.
    """
    dest = Path(path)
    if dest.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(
            f"--figure {dest}: the file name must end in {', '.join(sorted(FIGURE_SUFFIXES))}"
        )
    with _style():
        fig = trajectory_figure(trajectories, x=x)
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format=dest.suffix.lower().lstrip("."), dpi=dpi, metadata=None)
    return dest


# --- report section ----------------------------------------------------------------------------

SECTION_FIELDS: Mapping[str, str] = {
    "S": "S",
    "R": "R",
    "sigma_bar": "σ̄",
    "entropy_bits": "entropy (bits)",
    "top1_share": "top-1 share",
    "endpoint_mass": "endpoint mass",
}
"""Statistics of the per-step table of the report section (each ± its bootstrap SE) and
their column headings."""


def trajectory_report(
    trajectories: Mapping[str, Trajectory], *, figures: bool = True
) -> TrajectoryReport | None:
    """The section's data, with the figure drawn as SVG when ``figures`` and matplotlib allow
    (None when there are no trajectories)."""
    if not trajectories:
        return None
    if not figures:
        return TrajectoryReport(trajectories, figure_missing="figures were switched off")
    try:
        from persona_collapse.report.figures import _svg_fragment

        with _style():
            svg = _svg_fragment(trajectory_figure(trajectories), "fig_trajectory")
    except MissingDependencyError as exc:
        return TrajectoryReport(trajectories, figure_missing=str(exc))
    return TrajectoryReport(trajectories, svg=svg)


def _pm(est: Any, digits: int) -> str:
    return "—" if est is None else fmt_pm(est.value, est.se, digits)


def _step_rows(traj: Trajectory) -> list[list[str]]:
    rows = []
    for p in traj.points:
        est = p.metrics.estimates
        top = est.get("top1_rating")
        cells = [
            str(p.step),
            "—" if p.fraction_of_training is None else f"{p.fraction_of_training:.2f}",
            {"first": "base", "final": "variant"}.get(p.role, "checkpoint"),
            f"{traj.common.present[p.step]} / {traj.common.complete[p.step]}",
        ]
        for name in SECTION_FIELDS:
            cells.append(_pm(est.get(name), get_statistic(name).digits))
        cells.append("—" if top is None or not math.isfinite(top.value) else f"{top.value:g}")
        rows.append(cells)
    return rows


def _header() -> list[str]:
    return [
        "step",
        "fraction",
        "run",
        "personas present / complete",
        *SECTION_FIELDS.values(),
        "top-1 rating",
    ]


def _ci(interval: Any, level: int) -> str:
    return f"{interval.value:+.3f}, {level} % CI {interval.low:+.3f} to {interval.high:+.3f}"


def non_monotone_text(traj: Trajectory) -> str:
    """The finding on non-monotone S in words no stronger than its intervals."""
    nm = traj.non_monotone
    if nm is None:
        return "With fewer than 3 steps there is no test of a rise then fall of S."
    level = round(100 * nm.confidence)
    if nm.detected:
        return (
            f"{nm.statement()}. The confidence intervals of both the rise from step "
            f"{nm.first_step} ({_ci(nm.rise, level)}) and the drop to step {nm.final_step} "
            f"({_ci(nm.drop, level)}) exclude 0. The step of the maximum is chosen from "
            "the data and not corrected for."
        )
    if nm.peak_step in (nm.first_step, nm.final_step):
        where = "first" if nm.peak_step == nm.first_step else "final"
        return (
            f"S is largest at the {where} step ({nm.peak_step}, S = {nm.peak:.3f}): no rise "
            "then fall was found."
        )
    failed = [
        what for what, interval in (("rise", nm.rise), ("drop", nm.drop)) if not interval.low > 0
    ]
    return (
        f"S is largest at step {nm.peak_step} (S = {nm.peak:.3f}; step {nm.first_step}: "
        f"{nm.first:.3f}, step {nm.final_step}: {nm.final:.3f}), but the "
        f"{' and the '.join(failed)} {'is' if len(failed) == 1 else 'are'} not significant "
        f"(rise {_ci(nm.rise, level)}; drop {_ci(nm.drop, level)}): the data do not show "
        "a rise then fall of S."
    )


def _endpoint_rows(traj: Trajectory) -> list[list[str]]:
    rows = []
    for check in traj.endpoints:
        for name in ("S", "R", "top1_share"):
            alone = check.standalone.estimates.get(name)
            common = check.common.estimates.get(name)
            if alone is None or common is None:
                continue
            in_se = check.shift_in_se(name)
            rows.append(
                [
                    f"{check.step} ({'base' if check.role == 'first' else 'variant'})",
                    SECTION_FIELDS[name],
                    f"{_pm(alone, 3)} ({check.standalone.personas})",
                    f"{_pm(common, 3)} ({check.common.personas})",
                    f"{check.shift(name):+.3f}",
                    "—" if not math.isfinite(in_se) else f"{in_se:+.2f}",
                ]
            )
    return rows


def render_section(
    report: TrajectoryReport | None,
    *,
    table: Callable[..., Any],
    esc: Callable[[Any], str],
) -> str:
    """HTML of the "Training trajectories" section ("" without trajectories), built with the
    report's ``table`` and ``esc`` (passed in by :mod:`persona_collapse.report.html`)."""
    if report is None or not report.trajectories:
        return ""
    parts = [
        "<p>Variants measured at training checkpoints: step 0 is the family's base and the "
        "last step the variant itself (their own runs). Every statistic is computed on the "
        "<em>common persona set</em>, the personas complete at every step, so the steps are "
        "comparable; ± bootstrap SE. Files: <code>trajectory/&lt;family&gt;_&lt;variant&gt;"
        ".json</code> and <code>.csv</code>, <code>trajectory/trajectory.png</code>.</p>"
    ]
    if report.svg is not None:
        parts.append(
            '<figure id="fig_trajectory" role="img" aria-label="Trajectories">'
            f"{report.svg}<figcaption>R, S and rating entropy against training step (± SE), "
            "one line per variant; hollow markers: the endpoints (base and variant).</figcaption>"
            "</figure>"
        )
    elif report.figure_missing:
        parts.append(f'<p class="note">No figure: {esc(report.figure_missing)}.</p>')
    for name, traj in report.trajectories.items():
        n = len(traj.common)
        parts.append(f"<h3>{esc(name)}</h3>")
        parts.append(
            f"<p>{n} personas are complete at every one of the {len(traj.points)} steps "
            "(the common set); per step below: personas present / complete on their own.</p>"
        )
        parts.append(table(_header(), _step_rows(traj), left=3).markup)
        nm = traj.non_monotone
        # Only a detected pattern gets the highlighted box; absence of evidence is plain text.
        tag = (
            ('<div class="verdict">', "</div>")
            if nm is not None and nm.detected
            else ("<p>", "</p>")
        )
        parts.append(f"{tag[0]}{esc(non_monotone_text(traj))}{tag[1]}")
        parts.append(
            table(
                ["endpoint", "statistic", "stand-alone (personas)", "common set (personas)",
                 "shift", "shift / SE"],
                _endpoint_rows(traj),
                left=2,
                caption="Endpoints: stand-alone metrics (every persona complete in that run, "
                "as pcollapse metrics computes them) against the common set",
            ).markup
        )  # fmt: skip
    return "\n".join(parts)
