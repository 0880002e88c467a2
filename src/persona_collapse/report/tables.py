"""Tables of a study: data frames, CSV and JSON files, LaTeX tables.

Numbers are kept at full precision in CSV and JSON (rounding happens only in
the LaTeX and HTML renderings). Relative changes are written as percentages
(``dS_pct = 100 * ΔS``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from persona_collapse.core.csvio import write_csv_atomic
from persona_collapse.core.files import write_text_atomic
from persona_collapse.core.formatting import json_safe
from persona_collapse.core.version import __version__
from persona_collapse.report.model import (
    StudyResults,
    VariantResult,
    ceiling_limit,
    corrected_value,
    excess_points,
)
from persona_collapse.stats.compare import Change, VariantChange, check_band
from persona_collapse.stats.display import headline
from persona_collapse.stats.metrics import SelfProfile
from persona_collapse.stats.registry import Estimate, Statistic, statistics
from persona_collapse.stats.significance import ESTIMATES_EXPLANATION

# --- frames ---------------------------------------------------------------------------------


def _metric_row(v: VariantResult) -> dict[str, Any]:
    return {"family": v.family, "variant": v.label, "role": v.role or "", "run": v.persona_run}


def estimate_columns() -> list[str]:
    """``name, name_se`` of every registered statistic, in registration order."""
    return [col for st in statistics() for col in (st.name, f"{st.name}_se")]


def _change_column(stat: Statistic) -> str:
    return f"d{stat.name}" if stat.test_scale == "difference" else f"d{stat.name}_pct"


def change_columns() -> list[str]:
    """``d<name>_pct`` (relative change, %) of every registered statistic (``dS_pct``,
    ``dR_pct``, ...); ``d<name>`` (plain difference) for a difference-scale statistic."""
    return [_change_column(st) for st in statistics()]


def _change_cells(c: Change) -> dict[str, float]:
    cells = {}
    for st in statistics():
        value = c.values.get(st.name, math.nan)
        cells[_change_column(st)] = value if st.test_scale == "difference" else 100 * value
    return cells


def _estimate_cells(holder: Any) -> dict[str, float]:
    """:func:`estimate_columns` of anything with ``estimates`` (NaN where one is missing)."""
    found: Mapping[str, Estimate] = getattr(holder, "estimates", {}) or {}
    cells: dict[str, float] = {}
    for st in statistics():
        e = found.get(st.name)
        cells[st.name] = math.nan if e is None else e.value
        cells[f"{st.name}_se"] = math.nan if e is None else e.se
    return cells


CORRECTED_COLUMNS: tuple[str, ...] = tuple(
    f"{name}_corrected{key}"
    for name in ("S", "sigma_bar", "R")
    for key in ("", "_se", "_ci_low", "_ci_high")
)
"""The bias-corrected estimates beside the paper's (``S`` etc.): value, jackknife SE and
the jackknife-t interval (:mod:`persona_collapse.stats.significance`)."""


def _corrected_cells(fields: Mapping[str, Any] | None) -> dict[str, float]:
    """:data:`CORRECTED_COLUMNS` from a run's corrected fields (NaN where missing)."""
    return {c: float((fields or {}).get(c, math.nan)) for c in CORRECTED_COLUMNS}


def metrics_frame(results: StudyResults) -> pd.DataFrame:
    """S, R, sigma_bar with standard errors: one ``overall`` row and one row per foundation
    for every variant with metrics. The paper's estimates (``S``, ...) come with the
    bias-corrected ones (``S_corrected``, ...; :data:`CORRECTED_COLUMNS`); ``in_band``
    checks the paper's S, ``in_band_corrected`` the corrected S the verdicts use."""
    rows = []
    for v in results.variants():
        m = v.metrics
        if m is None:
            continue
        common = {
            **_metric_row(v),
            "personas": m.personas,
            "questions": m.questions,
            "excluded_personas": len(m.excluded_personas),
            "method": m.method,
            "n_persona_boot": m.n_persona_boot,
            "n_rerun_boot": m.n_rerun_boot,
            "seed": m.seed,
        }
        corrected = v.corrected or {}
        s_corrected = corrected.get("S_corrected")
        rows.append(
            {
                **common,
                "scope": "overall",
                **_estimate_cells(m),
                **_corrected_cells(corrected),
                "in_band": check_band(m.S, results.band).inside,
                "in_band_corrected": None
                if s_corrected is None
                else check_band(s_corrected, results.band).inside,
            }
        )
        by_group = corrected.get("corrected_by_foundation", {})
        for name, f in m.per_foundation.items():
            rows.append(
                {
                    **common,
                    "questions": len(f.items),
                    "scope": name,
                    **_estimate_cells(f),
                    **_corrected_cells(by_group.get(name)),
                    "in_band": None,
                    "in_band_corrected": None,
                }
            )
    columns = [
        "family",
        "variant",
        "role",
        "run",
        "scope",
        *estimate_columns(),
        *CORRECTED_COLUMNS,
        "in_band",
        "in_band_corrected",
        "personas",
        "questions",
        "excluded_personas",
        "method",
        "n_persona_boot",
        "n_rerun_boot",
        "seed",
    ]
    return pd.DataFrame(rows, columns=columns)


def _change_rows(
    family: str, comparison: str, role: str, change: VariantChange
) -> list[dict[str, Any]]:
    def row(scope: str, c: Change) -> dict[str, Any]:
        return {
            "family": family,
            "comparison": comparison,
            "role": role,
            "scope": scope,
            **_change_cells(c),
        }

    return [row("overall", change.overall)] + [
        row(name, c) for name, c in change.per_foundation.items()
    ]


def comparison_frame(results: StudyResults) -> pd.DataFrame:
    """Relative changes (%) of every variant against its family's base, the excess
    (treatment − control) and the means over families by role."""
    rows: list[dict[str, Any]] = []
    for fam in results.families.values():
        cmp = fam.comparison
        if cmp is None:
            continue
        for label, change in cmp.variants.items():
            role = fam.variants[label].role or ""
            rows.extend(_change_rows(fam.name, label, role, change))
        if cmp.excess is not None:
            rows.extend(_change_rows(fam.name, "excess", "treatment-control", cmp.excess))
    avg = results.average
    if avg is not None:
        label = f"mean ({avg.families} families)"
        for role, change in avg.variants.items():
            rows.extend(_change_rows(label, role, role, change))
        if avg.excess is not None:
            rows.extend(_change_rows(label, "excess", "treatment-control", avg.excess))
    columns = ["family", "comparison", "role", "scope", *change_columns()]
    return pd.DataFrame(rows, columns=columns)


def _profile_rows(v: VariantResult, kind: str, p: SelfProfile) -> list[dict[str, Any]]:
    return [
        {
            "family": v.family,
            "variant": v.label,
            "role": v.role or "",
            "profile": kind,
            "foundation": f,
            "mean": p.mean[f],
            "sd": p.sd.get(f, math.nan),
        }
        for f in p.mean
    ]


def profiles_frame(results: StudyResults) -> pd.DataFrame:
    """Per-foundation mean and sd of every self profile and toxic-control profile."""
    rows: list[dict[str, Any]] = []
    for v in results.variants():
        if v.self_profile is not None:
            rows.extend(_profile_rows(v, "self", v.self_profile))
        if v.toxic_profile is not None:
            rows.extend(_profile_rows(v, "toxic", v.toxic_profile))
    columns = ["family", "variant", "role", "profile", "foundation", "mean", "sd"]
    return pd.DataFrame(rows, columns=columns)


def diagnostics_frame(results: StudyResults) -> pd.DataFrame:
    """Scale usage, ceiling saturation and parse-failure rates per variant."""
    rows = []
    for v in results.variants():
        u = v.scale_usage
        rows.append(
            {
                **_metric_row(v),
                "floor_share": math.nan if u is None else u.floor_share,
                "ceiling_share": math.nan if u is None else u.ceiling_share,
                "entropy_bits": math.nan if u is None else u.entropy_bits,
                "max_entropy_bits": math.nan if u is None else u.max_entropy_bits,
                "ceiling_saturation_persona": v.ceiling_persona,
                "ceiling_saturation_self": v.ceiling_self,
                "parse_failure_rate": math.nan if v.parse is None else v.parse.rate,
                "self_parse_failure_rate": v.self_parse_rate,
                "s_ceiling_limited": ceiling_limit(v) is not None,
            }
        )
    return pd.DataFrame(rows)


def persona_failures_frame(results: StudyResults) -> pd.DataFrame:
    """Parse-failure rate of every persona in every variant's persona run."""
    rows = [
        {"family": v.family, "variant": v.label, "persona_id": pid, "failure_rate": rate}
        for v in results.variants()
        if v.parse is not None
        for pid, rate in zip(v.parse.persona_ids, v.parse.persona_rates, strict=True)
    ]
    return pd.DataFrame(rows, columns=["family", "variant", "persona_id", "failure_rate"])


def counts_frame(results: StudyResults) -> pd.DataFrame:
    """Personas kept, stored slots, failures, requests, tokens and cost per variant."""
    rows = []
    for v in results.variants():
        c = v.counts
        rows.append(
            {
                "family": v.family,
                "variant": v.label,
                "model": v.model,
                "backend": v.backend,
                "personas_total": c.personas_total,
                "personas_kept": c.personas_kept,
                "slots": c.slots,
                "planned": c.planned,
                "failed": c.failed,
                "requests": c.requests,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "cached_tokens": c.cached_tokens,
                "cost_usd": c.cost_usd,
            }
        )
    return pd.DataFrame(rows)


def temperature_frame(results: StudyResults) -> pd.DataFrame:
    """Every registered statistic (± SE) against temperature, for every logprobs variant."""
    rows = [
        {
            "family": v.family,
            "variant": v.label,
            "temperature": p.temperature,
            **_estimate_cells(p),
        }
        for v in results.variants()
        for p in v.temperature_curve
    ]
    columns = ["family", "variant", "temperature", *estimate_columns()]
    return pd.DataFrame(rows, columns=columns)


def verification_frame(results: StudyResults) -> pd.DataFrame:
    """Emergent-misalignment verification of every verified variant: one row per
    question and one pooled row (``question == "all"``); scores 0-100, shares 0-1."""
    from persona_collapse.report.verification import TABLE_COLUMNS, verification_table

    frames = []
    for v in results.variants():
        result = v.verification
        if result is None:
            continue
        frame = verification_table({v.label: result}, per_question=True)
        frame.insert(0, "family", v.family)
        frame.insert(2, "role", v.role or "")
        frame["judge"] = result.judge_model
        frame["method"] = result.method
        frame["seed"] = result.seed
        frames.append(frame)
    columns = ["family", "variant", "role", *TABLE_COLUMNS[1:], "judge", "method", "seed"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


SIGNIFICANCE_COLUMNS: tuple[str, ...] = (
    "family",
    "contrast",
    "reference",
    "variant",
    "metric",
    "scope",
    "estimate",
    "ci_low",
    "ci_high",
    "se",
    "se_persona",
    "se_rerun",
    "z",
    "p_value",
    "p_holm",
    "significant",
    "alpha",
    "n_boot",
    "n_rerun_boot",
    "paired",
    "seed",
    "estimate_corrected",
    "ci_low_corrected",
    "ci_high_corrected",
    "p_value_corrected",
    "p_holm_corrected",
    "significant_corrected",
    "verdict_estimator",
)
"""Columns of ``significance.csv`` (``estimate``: relative change or excess, a fraction;
a plain difference for a difference-scale statistic). ``estimate`` ... ``significant``
are the paper's estimators' test; ``*_corrected`` the bias-corrected one, which the
verdicts follow (``verdict_estimator``)."""


def significance_frame(results: StudyResults) -> pd.DataFrame:
    """The difference tests: one row per family, contrast, metric and scope."""
    rows = list(results.significance or ())
    known = [c for c in SIGNIFICANCE_COLUMNS if any(c in r for r in rows)] or list(
        SIGNIFICANCE_COLUMNS
    )
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in known]
    return pd.DataFrame([dict(r) for r in rows], columns=known + extra)


# --- JSON -------------------------------------------------------------------------------------


def results_json(results: StudyResults) -> dict[str, Any]:
    """Everything numeric of a study as plain data (metrics overall and per foundation)."""
    families: dict[str, Any] = {}
    for fam in results.families.values():
        variants = {}
        for v in fam.variants.values():
            u = v.scale_usage
            variants[v.label] = {
                "role": v.role,
                "model": v.model,
                "backend": v.backend,
                "runs": {"persona": v.persona_run, "self": v.self_run, "toxic": v.toxic_run},
                "metrics": None if v.metrics is None else v.metrics.to_dict(),
                "in_band": None
                if v.metrics is None
                else check_band(v.metrics.S, results.band).inside,
                # the bias-corrected estimates (overall and per foundation) and the band
                # check of the corrected S, which the verdicts use
                "corrected": None
                if v.corrected is None
                else {k: x for k, x in v.corrected.items() if k != "estimates_explanation"},
                "in_band_corrected": None
                if v.corrected is None or "S_corrected" not in v.corrected
                else check_band(v.corrected["S_corrected"], results.band).inside,
                "self_profile": None if v.self_profile is None else v.self_profile.to_dict(),
                "toxic_profile": None if v.toxic_profile is None else v.toxic_profile.to_dict(),
                "diagnostics": {
                    "floor_share": None if u is None else u.floor_share,
                    "ceiling_share": None if u is None else u.ceiling_share,
                    "entropy_bits": None if u is None else u.entropy_bits,
                    "ceiling_saturation_persona": v.ceiling_persona,
                    "ceiling_saturation_self": v.ceiling_self,
                    "parse_failure_rate": None if v.parse is None else v.parse.rate,
                    "self_parse_failure_rate": v.self_parse_rate,
                    "s_ceiling_limited": ceiling_limit(v) is not None,
                },
                "counts": {
                    k: getattr(v.counts, k)
                    for k in (
                        "personas_total",
                        "personas_kept",
                        "slots",
                        "planned",
                        "failed",
                        "requests",
                        "prompt_tokens",
                        "completion_tokens",
                        "cached_tokens",
                        "cost_usd",
                    )
                },
                "temperature_curve": [p.to_dict() for p in v.temperature_curve],
                "verification": None if v.verification is None else v.verification.to_dict(),
                "notes": list(v.notes),
            }
        families[fam.name] = {
            "base": fam.base,
            "control": fam.control,
            "treatment": fam.treatment,
            "variants": variants,
            "comparison": None if fam.comparison is None else fam.comparison.to_dict(),
        }
    return json_safe(
        {
            "study": results.name,
            "source": results.source,
            "version": __version__,
            "band": list(results.band),
            "estimates_explanation": ESTIMATES_EXPLANATION,
            "analysis": results.analysis.model_dump(),
            "protocol": dict(results.protocol),
            "seeds": dict(results.seeds),
            "families": families,
            "average_by_role": None if results.average is None else results.average.to_dict(),
            "significance": None
            if results.significance is None
            else [dict(r) for r in results.significance],
            "excess_r_vs_coherence": [p.__dict__ for p in excess_points(results)],
        }
    )


# --- LaTeX ------------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters so ``text`` prints literally."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _tex_pm(value: float, se: float, digits: int) -> str:
    if not math.isfinite(value):
        return "---"
    if not math.isfinite(se):
        return f"${value:.{digits}f}$"
    return f"${value:.{digits}f} \\pm {se:.{digits}f}$"


def _tex_pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "---"
    sign = "+" if value >= 0 else "-"
    return f"${sign}{abs(100 * value):.1f}\\,\\%$"


def _tabular(
    columns: str, header: Sequence[str], groups: Iterable[list[list[str]]], caption: str, label: str
) -> str:
    lines = [
        f"% Generated by persona-collapse {__version__}; needs \\usepackage{{booktabs}}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{columns}}}",
        "\\toprule",
        " & ".join(header) + " \\\\",
    ]
    for group in groups:
        if not group:
            continue
        lines.append("\\midrule")
        lines.extend(" & ".join(cells) + " \\\\" for cells in group)
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def _label_key(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name)


def _corrected_change(
    results: StudyResults, family: str, v: VariantResult, base: VariantResult | None, name: str
) -> float | None:
    """The relative change of the bias-corrected ``name`` against the base: the corrected
    difference test's estimate where one ran (the verdicts' number), else the ratio of the
    corrected estimates; None when either is missing."""
    row = results.test_row(family, v.label, name)
    if row is not None:
        try:
            value = float(row.get("estimate_corrected", math.nan))
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            return value
    here = corrected_value(v, name)
    there = None if base is None else corrected_value(base, name)
    if here is None or there is None or not there:
        return None
    return here / there - 1


LATEX_CORRECTED = ("S", "R")
"""Statistics whose bias-corrected estimate the LaTeX metrics table shows."""


def latex_metrics_table(results: StudyResults) -> str:
    """S and R (± SE) with their change against the base: one row per variant; the
    paper's estimates, then (when computed) the bias-corrected ones (± jackknife SE)."""
    show_corrected = any(v.corrected for v in results.variants())
    corrected_stats = [st for st in headline() if st.name in LATEX_CORRECTED]
    groups = []
    for fam in results.families.values():
        rows = []
        base = fam.variants.get(fam.base)
        for i, v in enumerate(fam.variants.values()):
            m = v.metrics
            change = (
                fam.comparison.variants.get(v.label)
                if fam.comparison is not None and v.label != fam.base
                else None
            )
            cells = [latex_escape(fam.name) if i == 0 else "", latex_escape(v.label)]
            for st in headline():
                e = None if m is None else m.estimates.get(st.name)
                cells.append("---" if e is None else _tex_pm(e.value, e.se, st.digits))
                d = None if change is None else change.overall.values.get(st.name)
                cells.append("---" if d is None else _tex_pct(d))
            if show_corrected:
                for st in corrected_stats:
                    value = corrected_value(v, st.name)
                    se = corrected_value(v, st.name, key="_se")
                    cells.append(
                        "---"
                        if value is None
                        else _tex_pm(value, math.nan if se is None else se, st.digits)
                    )
                    d = (
                        None
                        if v.label == fam.base
                        else _corrected_change(results, fam.name, v, base, st.name)
                    )
                    cells.append(_tex_pct(d))
            rows.append(cells)
        groups.append(rows)
    low, high = results.band
    caption = (
        f"Moral susceptibility $S$ and robustness $R$ (mean $\\pm$ bootstrap SE) of study "
        f"{latex_escape(results.name)}; $\\Delta$: change relative to the family's base model. "
        f"Frontier base models span $S \\in [{low:g}, {high:g}]$."
    )
    if show_corrected:
        caption += (
            " $S$, $R$: the paper's estimates; $S_c$, $R_c$: the bias-corrected ones "
            "(mean $\\pm$ jackknife SE), which the verdicts use. "
            + latex_escape(ESTIMATES_EXPLANATION)
        )
    header = ["Family", "Variant"]
    for st in headline():
        header += [f"${_tex_symbol(st.label)}$", f"$\\Delta {_tex_symbol(st.label)}$"]
    if show_corrected:
        for st in corrected_stats:
            sym = f"{_tex_symbol(st.label)}_c"
            header += [f"${sym}$", f"$\\Delta {sym}$"]
    columns = "ll" + "rr" * (len(headline()) + (len(corrected_stats) if show_corrected else 0))
    return _tabular(columns, header, groups, caption, f"tab:{_label_key(results.name)}-metrics")


def _tex_symbol(text: str) -> str:
    """A statistic's label in LaTeX math (``σ̄`` -> ``\\bar\\sigma``)."""
    return {"σ̄": "\\bar\\sigma"}.get(text, text)


def _profile_table(
    results: StudyResults, kind: str, profiles: Sequence[tuple[VariantResult, SelfProfile]]
) -> str:
    foundations = list(results.foundations)
    groups: dict[str, list[list[str]]] = {}
    for v, p in profiles:
        rows = groups.setdefault(v.family, [])
        rows.append(
            [
                latex_escape(v.family) if not rows else "",
                latex_escape(v.label),
                *(
                    _tex_pm(p.mean[f], p.sd.get(f, math.nan), 2) if f in p.mean else "---"
                    for f in foundations
                ),
            ]
        )
    header = ["Family", "Variant", *(latex_escape(f) for f in foundations)]
    what = "Self-profiles" if kind == "self" else "Toxic-persona control profiles"
    caption = (
        f"{what} of study {latex_escape(results.name)}: per-foundation mean rating "
        "$\\pm$ mean item sd."
    )
    return _tabular(
        "ll" + "r" * len(foundations),
        header,
        groups.values(),
        caption,
        f"tab:{_label_key(results.name)}-{kind}-profiles",
    )


def latex_self_profiles_table(results: StudyResults) -> str:
    """Self-profiles per foundation: one row per variant with a self run."""
    return _profile_table(
        results,
        "self",
        [(v, v.self_profile) for v in results.variants() if v.self_profile is not None],
    )


def latex_toxic_profiles_table(results: StudyResults) -> str:
    """Toxic-control profiles per foundation: one row per base variant with the control."""
    return _profile_table(
        results,
        "toxic",
        [(v, v.toxic_profile) for v in results.variants() if v.toxic_profile is not None],
    )


def latex_document(inputs: Sequence[str]) -> str:
    """A minimal document that typesets the given table files (``\\input`` names)."""
    body = "\n".join(f"\\input{{{name}}}" for name in inputs)
    return (
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        f"{body}\n\\end{{document}}\n"
    )


# --- files ------------------------------------------------------------------------------------


def write_tables(results: StudyResults, out_dir: Path, *, raw_csv: bool = False) -> dict[str, Path]:
    """Write the CSV, JSON and LaTeX tables into ``out_dir``; returns name -> path.

    CSV text cells are formula-neutralised unless ``raw_csv`` (see ``_csv``).
    """
    files: dict[str, Path] = {}
    frames = {
        "metrics.csv": metrics_frame(results),
        "comparison.csv": comparison_frame(results),
        "profiles.csv": profiles_frame(results),
        "diagnostics.csv": diagnostics_frame(results),
        "parse_failures_by_persona.csv": persona_failures_frame(results),
        "counts.csv": counts_frame(results),
    }
    if results.has_temperature_curves:
        frames["temperature_curves.csv"] = temperature_frame(results)
    if results.significance is not None:
        frames["significance.csv"] = significance_frame(results)
    if results.has_verification:
        frames["verification.csv"] = verification_frame(results)
    for name, frame in frames.items():
        files[name] = write_csv_atomic(frame, out_dir / name, raw=raw_csv)
    files["metrics.json"] = write_text_atomic(
        out_dir / "metrics.json",
        json.dumps(results_json(results), indent=2, ensure_ascii=False) + "\n",
    )
    tex = {
        "tables/table_metrics.tex": latex_metrics_table(results),
        "tables/table_self_profiles.tex": latex_self_profiles_table(results),
    }
    if any(v.toxic_profile is not None for v in results.variants()):
        tex["tables/table_toxic_profiles.tex"] = latex_toxic_profiles_table(results)
    tex["tables/tables.tex"] = latex_document([Path(n).stem for n in tex])
    for name, text in tex.items():
        files[name] = write_text_atomic(out_dir / name, text)
    return files


__all__ = [
    "CORRECTED_COLUMNS",
    "SIGNIFICANCE_COLUMNS",
    "change_columns",
    "comparison_frame",
    "counts_frame",
    "diagnostics_frame",
    "estimate_columns",
    "json_safe",
    "latex_escape",
    "latex_metrics_table",
    "latex_self_profiles_table",
    "latex_toxic_profiles_table",
    "metrics_frame",
    "persona_failures_frame",
    "profiles_frame",
    "results_json",
    "significance_frame",
    "temperature_frame",
    "verification_frame",
    "write_tables",
]
