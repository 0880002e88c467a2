"""Figures of checkpoint trajectories: statistics against training step, one line per run.

Follows :mod:`persona_collapse.report.figures`: ``plot_*`` functions draw on ``ax`` (new
axes when None), pass ``**kwargs`` to the line and return the axes. Intermediate
checkpoints are filled markers; the endpoints (step 0 = the base, the final step =
the published variant) are hollow markers, since they are runs of their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persona_collapse.core.errors import UserError
from persona_collapse.core.files import atomic_path
from persona_collapse.report.figures import OTHER_COLORS, axis_label, new_axes
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
