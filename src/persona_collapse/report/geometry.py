"""Persona geometry of several variants of one base model: tables, CSV files and figures.

:func:`analyse_geometry` turns the hidden-states files of a base model and its
fine-tunes (:mod:`persona_collapse.backends.hidden_states`) into per-layer tables
(:mod:`persona_collapse.stats.geometry`); :func:`write_geometry_outputs` writes
them as CSV files and PNG figures. The geometry uses template 0; the resolution
floor uses every template.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from persona_collapse.backends.hidden_states import HiddenStates
from persona_collapse.core.errors import ConfigError
from persona_collapse.core.files import atomic_path
from persona_collapse.report.figures import OTHER_COLORS, ROLE_COLORS, new_axes
from persona_collapse.report.model import GeometryReport
from persona_collapse.stats import geometry as geo

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LAYER_SUMMARY = "layer_summary.csv"
PR_SATURATION = "pr_saturation.csv"
RESOLUTION_FLOOR = "resolution_floor.csv"
EXCESS = "excess.csv"
EXCESS_BANDS = "excess_bands.csv"
FIGURES = ("geometry_layers.png", "excess.png", "resolution_floor.png", "pr_saturation.png")


@dataclass(frozen=True)
class GeometryAnalysis:
    """Every geometry table of one family of variants (see the module docstring)."""

    base: str
    treatment: str | None
    control: str | None
    summaries: dict[str, geo.LayerSummary]
    saturation: dict[str, geo.PRSaturation]
    saturation_layer: int
    resolution: dict[str, list[geo.ResolutionFloor]]
    excess: geo.ExcessResult | None
    personas: int
    templates: int

    def layer_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [{"variant": v, **r} for v, s in self.summaries.items() for r in s.rows()]
        return pd.DataFrame(rows)

    def saturation_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {
                "variant": v,
                "layer": self.saturation_layer,
                "personas": int(size),
                "draws": len(s.values[k]),
                "pr_mean": float(s.mean[k]),
                "pr_sd": float(s.sd[k]),
                "near_rank_limit": s.near_rank_limit,
            }
            for v, s in self.saturation.items()
            for k, size in enumerate(s.sizes)
        ]
        return pd.DataFrame(rows)

    def resolution_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {
                "variant": v,
                "layer": layer,
                "within": r.within,
                "between": r.between,
                "fisher": r.fisher,
                "eta_squared": r.eta_squared,
                "nn_centroid_over_within_sd": r.nn_centroid_over_within_sd,
            }
            for v, floors in self.resolution.items()
            for layer, r in enumerate(floors)
        ]
        return pd.DataFrame(rows)

    def excess_frame(self) -> pd.DataFrame | None:
        import pandas as pd

        return None if self.excess is None else pd.DataFrame(self.excess.rows())

    def bands_frame(self) -> pd.DataFrame | None:
        import pandas as pd

        if self.excess is None:
            return None
        return pd.DataFrame(
            [
                {
                    "band": b.name,
                    "first_layer": b.lo,
                    "last_layer": b.hi - 1,
                    "excess_pp": b.excess_pp,
                    "ci_lo": b.ci_lo,
                    "ci_hi": b.ci_hi,
                    "significant": b.significant,
                    "draws": self.excess.draws,
                    "subsample": self.excess.subsample,
                }
                for b in self.excess.bands
            ]
        )


def _check_family(states: Mapping[str, HiddenStates], base: str) -> HiddenStates:
    if base not in states:
        raise ConfigError(f"the base variant {base!r} has no hidden states")
    ref = states[base]
    for name, hs in states.items():
        if hs.personas != ref.personas or hs.templates != ref.templates:
            raise ConfigError(
                f"variant {name!r} was collected on other personas or templates than {base!r}"
            )
        if hs.states.shape != ref.states.shape:
            raise ConfigError(
                f"variant {name!r} has states of shape {hs.states.shape}, "
                f"{base!r} {ref.states.shape} (another base model?)"
            )
    return ref


def analyse_geometry(
    states: Mapping[str, HiddenStates],
    *,
    base: str,
    treatment: str | None = None,
    control: str | None = None,
    draws: int = 60,
    fraction: float = 0.8,
    bootstrap: bool = False,
    bands: Sequence[tuple[str, int, int]] = (),
    saturation_draws: int = 5,
    seed: int = 0,
) -> GeometryAnalysis:
    """Per-layer geometry of every variant, base comparisons and (with a treatment and a
    control) the excess with paired-subsample intervals (``bootstrap``: resampled with
    replacement). ``bands`` (name, first slot, end slot) are added to the default ones
    (a preregistered band).

    Raises:
        ConfigError: unknown base/treatment/control, or variants of different inputs.
    """
    ref = _check_family(states, base)
    for role, name in (("treatment", treatment), ("control", control)):
        if name is not None and name not in states:
            raise ConfigError(f"the {role} variant {name!r} has no hidden states")
    if (treatment is None) != (control is None):
        raise ConfigError("the excess needs both a treatment and a control variant")
    primary = {v: hs.by_template(0) for v, hs in states.items()}  # float16; per layer in float64
    layers = ref.layer_indices
    summaries = {
        v: geo.layer_summary(x, base=None if v == base else primary[base], layers=layers)
        for v, x in primary.items()
    }
    mid = len(layers) // 2
    saturation = {
        v: geo.pr_saturation(x[:, mid], draws=saturation_draws, rng=seed)
        for v, x in primary.items()
    }
    resolution: dict[str, list[geo.ResolutionFloor]] = {}
    if len(ref.templates) > 1:
        for v, hs in states.items():
            grid = hs.by_persona()
            resolution[v] = [geo.resolution_floor(grid[:, :, k]) for k in range(len(layers))]
    for name, lo, hi in bands:
        if not 0 < lo < hi <= len(layers):
            raise ConfigError(f"band {name!r}: outside the model's layers 1-{len(layers) - 1}")
    excess = None
    if treatment is not None and control is not None:
        excess = geo.excess_pr(
            primary[treatment],
            primary[control],
            primary[base],
            layers=layers,
            draws=draws,
            fraction=fraction,
            replace=bootstrap,
            bands=[*geo.default_bands(len(layers)), *bands],
            rng=seed,
        )
    return GeometryAnalysis(
        base=base,
        treatment=treatment,
        control=control,
        summaries=summaries,
        saturation=saturation,
        saturation_layer=int(layers[mid]),
        resolution=resolution,
        excess=excess,
        personas=len(ref.personas),
        templates=len(ref.templates),
    )


# --- figures -----------------------------------------------------------------------------------


def _colors(analysis: GeometryAnalysis) -> dict[str, str]:
    roles = {analysis.base: "base", analysis.treatment: "treatment", analysis.control: "control"}
    others = iter(OTHER_COLORS * 8)
    return {v: ROLE_COLORS[roles[v]] if roles.get(v) else next(others) for v in analysis.summaries}


GEOMETRY_PANELS: tuple[tuple[str, str], ...] = (
    ("participation_ratio", "Participation ratio"),
    ("participation_ratio_unitnorm", "PR (unit rows)"),
    ("clumpiness", "Clumpiness (NN / mean distance)"),
    ("distance_bimodality", "Distance bimodality (Sarle)"),
    ("rdm_spearman_vs_base", "RDM Spearman vs base"),
    ("offset_over_base_radius", "Centroid offset / base radius"),
)


def plot_layer_curve(
    analysis: GeometryAnalysis, metric: str, *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """One per-layer measure of every variant against layer."""
    ax = ax if ax is not None else new_axes()
    colors = _colors(analysis)
    for v, s in analysis.summaries.items():
        values = getattr(s, metric)
        if np.all(np.isnan(values)):
            continue
        ax.plot(s.layers, values, marker=".", color=colors[v], label=v, **kwargs)
    ax.set_xlabel("layer")
    ax.set_ylabel(dict(GEOMETRY_PANELS).get(metric, metric))
    return ax


def plot_excess(analysis: GeometryAnalysis, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Excess ΔPR (treatment − control, pp) against layer with its interval; significant
    layers filled."""
    ax = ax if ax is not None else new_axes()
    res = analysis.excess
    if res is None:
        ax.set_axis_off()
        return ax
    color = ROLE_COLORS["treatment"]
    ax.fill_between(res.layers, res.ci_lo, res.ci_hi, color=color, alpha=0.2, linewidth=0)
    ax.plot(res.layers, res.excess_pp, color=color, marker=".", label="excess", **kwargs)
    sig = res.significant
    ax.plot(res.layers[sig], res.excess_pp[sig], "o", color=color, label="CI excludes 0")
    ax.axhline(0.0, color="#888888", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"ΔPR excess, pp ({analysis.treatment} − {analysis.control})")
    ax.legend(fontsize="small")
    return ax


def plot_delta_pr(analysis: GeometryAnalysis, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """ΔPR % of treatment and control against base, per layer."""
    ax = ax if ax is not None else new_axes()
    res = analysis.excess
    if res is None:
        ax.set_axis_off()
        return ax
    for label, values, role in (
        (analysis.treatment, res.dpr_treatment_pct, "treatment"),
        (analysis.control, res.dpr_control_pct, "control"),
    ):
        ax.plot(res.layers, values, marker=".", color=ROLE_COLORS[role], label=label, **kwargs)
    ax.axhline(0.0, color="#888888", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("ΔPR vs base, %")
    ax.legend(fontsize="small")
    return ax


def plot_displacement(analysis: GeometryAnalysis, *, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Mean displacement from base in % of the inter-persona distance, per layer."""
    ax = ax if ax is not None else new_axes()
    res = analysis.excess
    if res is None:
        ax.set_axis_off()
        return ax
    for label, values, role in (
        (analysis.treatment, res.displacement_treatment_pct, "treatment"),
        (analysis.control, res.displacement_control_pct, "control"),
    ):
        ax.plot(res.layers, values, marker=".", color=ROLE_COLORS[role], label=label, **kwargs)
    ax.set_xlabel("layer")
    ax.set_ylabel("displacement, % of inter-persona distance")
    ax.legend(fontsize="small")
    return ax


def plot_resolution_floor(
    analysis: GeometryAnalysis, *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """η² (persona share of the variance across templates) against layer."""
    ax = ax if ax is not None else new_axes()
    colors = _colors(analysis)
    for v, floors in analysis.resolution.items():
        ax.plot(
            range(len(floors)),
            [r.eta_squared for r in floors],
            marker=".",
            color=colors[v],
            label=v,
            **kwargs,
        )
    ax.set_xlabel("layer")
    ax.set_ylabel("η² = between / (between + within)")
    ax.set_ylim(0, 1.02)
    return ax


def plot_pr_saturation(
    analysis: GeometryAnalysis, *, ax: Axes | None = None, **kwargs: Any
) -> Axes:
    """PR against the number of personas (mean ± sd of subsamples) at the middle layer."""
    ax = ax if ax is not None else new_axes()
    colors = _colors(analysis)
    for v, s in analysis.saturation.items():
        ax.errorbar(s.sizes, s.mean, yerr=s.sd, marker="o", color=colors[v], label=v, **kwargs)
    ax.set_xscale("log")
    ax.set_xlabel("personas")
    ax.set_ylabel(f"participation ratio (layer {analysis.saturation_layer})")
    return ax


def _save(fig: Any, path: Path, dpi: int) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def geometry_figures(analysis: GeometryAnalysis) -> list[tuple[str, Figure]]:
    """The geometry figures of ``analysis``: (file name, figure), those that apply."""
    from matplotlib.figure import Figure

    figures: list[tuple[str, Figure]] = []
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (metric, _label) in zip(axes, GEOMETRY_PANELS, strict=True):
        plot_layer_curve(analysis, metric, ax=ax)
    axes[0].legend(fontsize="small")
    figures.append((FIGURES[0], fig))
    if analysis.excess is not None:
        fig = Figure(figsize=(11, 3.6), layout="constrained")
        a, b, c = fig.subplots(1, 3)
        plot_excess(analysis, ax=a)
        plot_delta_pr(analysis, ax=b)
        plot_displacement(analysis, ax=c)
        figures.append((FIGURES[1], fig))
    if analysis.resolution:
        ax = plot_resolution_floor(analysis)
        ax.legend(fontsize="small")
        figures.append((FIGURES[2], cast("Figure", ax.figure)))
    ax = plot_pr_saturation(analysis)
    ax.legend(fontsize="small")
    figures.append((FIGURES[3], cast("Figure", ax.figure)))
    return figures


def render_geometry_figures(
    analysis: GeometryAnalysis, folder: Path, *, dpi: int = 110
) -> list[Path]:
    """Write the geometry figures (PNG) into ``folder``; the paths written."""
    return [_save(fig, folder / name, dpi) for name, fig in geometry_figures(analysis)]


def write_geometry_outputs(
    analysis: GeometryAnalysis, folder: Path, *, figures: bool = True
) -> list[Path]:
    """CSV files (and figures) of ``analysis`` in ``folder``; the paths written."""
    from persona_collapse.core.csvio import write_csv_atomic

    frames: Sequence[tuple[str, pd.DataFrame | None]] = (
        (LAYER_SUMMARY, analysis.layer_frame()),
        (PR_SATURATION, analysis.saturation_frame()),
        (RESOLUTION_FLOOR, analysis.resolution_frame() if analysis.resolution else None),
        (EXCESS, analysis.excess_frame()),
        (EXCESS_BANDS, analysis.bands_frame()),
    )
    written = [
        write_csv_atomic(frame, folder / name) for name, frame in frames if frame is not None
    ]
    if figures:
        written += render_geometry_figures(analysis, folder)
    return written


# --- report section ----------------------------------------------------------------------------

_FIGURE_TITLES = {
    FIGURES[0]: "Persona cloud per layer",
    FIGURES[1]: "Excess ΔPR, ΔPR and displacement per layer",
}
"""Figures shown inline in the report (the others are only files)."""


def geometry_report(
    analyses: Mapping[str, GeometryAnalysis],
    *,
    notes: Sequence[str] = (),
    figures: bool = True,
    png_folder: Path | None = None,
    dpi: int = 110,
) -> GeometryReport | None:
    """The section's data, figures drawn as inline SVG when ``figures`` and matplotlib
    allow (None without analyses). With ``png_folder``, every figure is also written
    there as PNG (``<png_folder>/<family>/``), drawn once for both."""
    if not analyses:
        return None
    if not figures:
        return GeometryReport(
            dict(analyses), figure_missing="figures were switched off", notes=tuple(notes)
        )
    from persona_collapse.core.errors import MissingDependencyError
    from persona_collapse.report.figures import _svg_fragment

    try:
        new_axes(figsize=(1, 1))  # raises MissingDependencyError without matplotlib
    except MissingDependencyError as exc:
        return GeometryReport(dict(analyses), figure_missing=str(exc), notes=tuple(notes))
    svgs: dict[str, tuple[tuple[str, str], ...]] = {}
    for family, analysis in analyses.items():
        shown = []
        for k, (name, fig) in enumerate(geometry_figures(analysis)):
            if png_folder is not None:
                _save(fig, png_folder / family / name, dpi)
            if name in _FIGURE_TITLES:
                shown.append((_FIGURE_TITLES[name], _svg_fragment(fig, f"geo_{family}_{k}")))
        svgs[family] = tuple(shown)
    return GeometryReport(dict(analyses), svgs=svgs, notes=tuple(notes))


def _num(value: float, digits: int) -> str:
    return "—" if not np.isfinite(value) else f"{value:.{digits}f}"


def _summary_rows(analysis: GeometryAnalysis) -> list[list[str]]:
    rows = []
    last = len(next(iter(analysis.summaries.values())).layers) - 1
    for k, where in ((analysis.saturation_layer, "middle"), (last, "last")):
        for v, s in analysis.summaries.items():
            rows.append(
                [
                    v,
                    f"{int(s.layers[k])} ({where})",
                    _num(s.participation_ratio[k], 2),
                    _num(s.participation_ratio_unitnorm[k], 2),
                    _num(s.clumpiness[k], 3),
                    _num(s.distance_bimodality[k], 3),
                    _num(s.rdm_spearman_vs_base[k], 3),
                    _num(s.offset_over_base_radius[k], 3),
                ]
            )
    return rows


def _excess_sentence(analysis: GeometryAnalysis) -> str:
    res = analysis.excess
    if res is None:
        return (
            "No excess: the family has no treatment and control variant both measured "
            "as adapters of the base."
        )
    found = [b for b in res.bands if b.significant]
    lead = (
        f"Excess ΔPR = ΔPR % of {analysis.treatment} minus ΔPR % of {analysis.control} "
        f"(each against {analysis.base}), in percentage points; intervals from {res.draws} "
        f"paired persona draws ({res.subsample} personas each, the same personas in every "
        f"variant), {round(100 * res.confidence)} % intervals. "
    )
    if not found:
        return lead + "No band's interval excludes 0: no excess collapse is shown."
    listed = "; ".join(
        f"{b.name} layers {b.lo}-{b.hi - 1}: {b.excess_pp:+.2f} pp [{b.ci_lo:+.2f}, {b.ci_hi:+.2f}]"
        for b in found
    )
    return lead + f"Bands whose interval excludes 0: {listed}."


def render_section(
    report: GeometryReport | None,
    *,
    table: Callable[..., Any],
    esc: Callable[[Any], str],
) -> str:
    """HTML of the "Persona geometry" section ("" without geometry), built with the
    report's ``table`` and ``esc`` (passed in by :mod:`persona_collapse.report.html`)."""
    if report is None or not report.families:
        return ""
    parts = [
        "<p>Final-token hidden states of persona-only prompts at every layer, the base "
        "model and each adapter on one loaded model. Per layer: participation ratio (PR; "
        "effective dimensionality of the persona cloud, raw and of unit-length states), "
        "clumpiness (nearest-neighbour over mean distance), distance bimodality (Sarle), "
        "and against the base: RDM Spearman correlation and centroid offset over the base's "
        "RMS radius. Files: <code>geometry/&lt;family&gt;/</code> (CSV tables, PNG figures, "
        "<code>states/</code>).</p>"
    ]
    for family, analysis in report.families.items():
        parts.append(f"<h3>{esc(family)}</h3>")
        parts.append(
            f"<p>{analysis.personas} personas, {analysis.templates} templates; geometry "
            "from template 0.</p>"
        )
        parts.append(
            table(
                ["variant", "layer", "PR", "PR unit", "clumpiness", "bimodality", "RDM ρ",
                 "offset / radius"],
                _summary_rows(analysis),
                left=2,
            ).markup
        )  # fmt: skip
        parts.append(f"<p>{esc(_excess_sentence(analysis))}</p>")
        if analysis.excess is not None:
            bands = [
                [
                    b.name,
                    f"{b.lo}-{b.hi - 1}",
                    f"{b.excess_pp:+.2f}",
                    f"[{b.ci_lo:+.2f}, {b.ci_hi:+.2f}]",
                    "yes" if b.significant else "no",
                ]
                for b in analysis.excess.bands
            ]
            parts.append(
                table(
                    ["band", "layers", "excess ΔPR (pp)", "CI", "CI excludes 0"],
                    bands,
                    left=1,
                    caption="Excess ΔPR averaged over layer bands",
                ).markup
            )
            res = analysis.excess
            per_layer = [
                [
                    str(int(layer)),
                    f"{res.excess_pp[k]:+.2f}",
                    f"[{res.ci_lo[k]:+.2f}, {res.ci_hi[k]:+.2f}]",
                    f"{res.dpr_treatment_pct[k]:+.1f}",
                    f"{res.dpr_control_pct[k]:+.1f}",
                    _num(res.displacement_treatment_pct[k], 1),
                    _num(res.displacement_control_pct[k], 1),
                ]
                for k, layer in enumerate(res.layers)
            ]
            header = [
                "layer",
                "excess (pp)",
                "CI",
                f"ΔPR % {analysis.treatment}",
                f"ΔPR % {analysis.control}",
                f"displacement % {analysis.treatment}",
                f"displacement % {analysis.control}",
            ]
            parts.append(
                f"<details><summary>Excess per layer ({len(per_layer)} layers)</summary>"
                f"{table(header, per_layer, left=1).markup}</details>"
            )
        limited = [v for v, sat in analysis.saturation.items() if sat.near_rank_limit]
        if limited:
            parts.append(
                f'<p class="note">PR is above 0.9 (N − 1) at layer {analysis.saturation_layer} '
                f"for {esc(', '.join(limited))}: the persona count, not the model, bounds it "
                "(see pr_saturation.csv).</p>"
            )
        for title, svg in report.svgs.get(family, ()):
            parts.append(
                f'<figure role="img" aria-label="{esc(title)}"><h4>{esc(title)}</h4>{svg}</figure>'
            )
    if not report.svgs and report.figure_missing:
        parts.append(f'<p class="note">No figures: {esc(report.figure_missing)}.</p>')
    if report.notes:
        parts.append(
            "<ul>" + "".join(f'<li class="note">{esc(n)}</li>' for n in report.notes) + "</ul>"
        )
    return "\n".join(parts)


__all__ = [
    "GEOMETRY_PANELS",
    "GeometryAnalysis",
    "analyse_geometry",
    "geometry_report",
    "plot_delta_pr",
    "plot_displacement",
    "plot_excess",
    "plot_layer_curve",
    "plot_pr_saturation",
    "plot_resolution_floor",
    "render_geometry_figures",
    "render_section",
    "write_geometry_outputs",
]
