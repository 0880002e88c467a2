"""Report section "Is it persona-specific?": persona instability against control tasks.

For each family and variant it sets the instability of MFQ persona cells, BFI persona
cells (when run), the capability tasks and lookup side by side (non-unanimity and
normalised Gini, with the change against the family's base), lists the capability
deltas (paired bootstrap CIs, Holm-adjusted across the study) and words one verdict
per variant from those significance results only:

* *broad*: a capability accuracy fell significantly (Holm-adjusted p below alpha);
* *selective*: the rise of persona non-unanimity (protocol instrument) exceeds the rise
  on every control task (capability and lookup), each difference's 95 % CI above 0;
* otherwise "no significant difference". Never stronger than the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

VerdictKind = Literal["broad", "selective", "none"]


@dataclass(frozen=True)
class InstabilityRow:
    """Instability (and accuracy, for tasks with ground truth) of one variant on one measure.

    ``measure`` is ``"<instrument> persona"`` (MFQ, BFI) or a control task name.
    """

    family: str
    label: str
    measure: str
    non_unanimity: float
    non_unanimity_se: float
    gini_norm: float
    gini_norm_se: float
    accuracy: float | None
    accuracy_se: float | None


@dataclass(frozen=True)
class ControlDelta:
    """Variant - base of a control task's ``accuracy`` or ``non_unanimity``."""

    family: str
    label: str
    task: str
    measure: str
    point: float
    lo: float
    hi: float
    p: float
    p_holm: float


@dataclass(frozen=True)
class PersonaGap:
    """Rise of persona non-unanimity minus rise of a capability task's, with a 95 % CI."""

    family: str
    label: str
    task: str
    diff: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ControlVerdict:
    """The sentence of one variant."""

    family: str
    label: str
    kind: VerdictKind
    text: str


@dataclass(frozen=True)
class ControlsReport:
    """Everything the section shows."""

    rows: tuple[InstabilityRow, ...]
    deltas: tuple[ControlDelta, ...]
    gaps: tuple[PersonaGap, ...]
    alpha: float
    verdicts: tuple[ControlVerdict, ...]
    bases: tuple[tuple[str, str], ...] = ()
    """(family, base variant) of every family."""


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def build_verdicts(report: ControlsReport) -> tuple[ControlVerdict, ...]:
    """One verdict per non-base variant with control data (see the module docstring)."""
    base_of = dict(report.bases)
    variants = list(dict.fromkeys((r.family, r.label) for r in report.rows))
    out: list[ControlVerdict] = []
    for family, label in variants:
        if base_of.get(family) == label:
            continue
        fell = [
            d
            for d in report.deltas
            if (d.family, d.label) == (family, label)
            and d.measure == "accuracy"
            and d.task != "lookup"
            and d.point < 0
            and d.p_holm < report.alpha
        ]
        gaps = [g for g in report.gaps if (g.family, g.label) == (family, label)]
        if fell:
            detail = "; ".join(
                f"{d.task} {_signed(d.point)}, 95 % CI [{d.lo:+.3f}, {d.hi:+.3f}], "
                f"Holm p = {d.p_holm:.3g}"
                for d in fell
            )
            text = f"the model degraded broadly (accuracy fell significantly: {detail})"
            kind: VerdictKind = "broad"
        elif gaps and all(g.lo > 0 for g in gaps):
            detail = "; ".join(
                f"vs {g.task}: difference {_signed(g.diff)}, 95 % CI [{g.lo:+.3f}, {g.hi:+.3f}]"
                for g in gaps
            )
            text = f"persona instability rose more than non-persona instability ({detail})"
            kind = "selective"
        elif not gaps and not any((d.family, d.label) == (family, label) for d in report.deltas):
            continue
        else:
            text = (
                "no significant difference (neither a significant fall in accuracy nor a "
                "rise of persona instability significantly above that of the control tasks)"
            )
            kind = "none"
        out.append(ControlVerdict(family, label, kind, f"{family}/{label}: {text}."))
    return tuple(out)


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _change(value: float, base: float | None) -> str:
    if base is None or not math.isfinite(value) or not math.isfinite(base):
        return "—"
    if base == 0:
        return _signed(value - base)
    return f"{_signed(value - base)} ({(value / base - 1) * 100:+.0f} %)"


def section_rows(report: ControlsReport) -> list[list[str]]:
    """Text cells of the side-by-side table (change vs base: absolute, relative)."""
    base = {(r.family, r.measure): r for r in report.rows if _is_base(report, r)}
    out: list[list[str]] = []
    for r in report.rows:
        b = base.get((r.family, r.measure))
        same = b is r
        out.append(
            [
                r.family,
                r.label,
                r.measure,
                f"{_num(r.non_unanimity)} ± {_num(r.non_unanimity_se)}",
                "" if same else _change(r.non_unanimity, None if b is None else b.non_unanimity),
                f"{_num(r.gini_norm)}",
                "" if same else _change(r.gini_norm, None if b is None else b.gini_norm),
                "—" if r.accuracy is None else f"{_num(r.accuracy)} ± {_num(r.accuracy_se)}",
            ]
        )
    return out


def _is_base(report: ControlsReport, row: InstabilityRow) -> bool:
    return (row.family, row.label) in set(report.bases)


def render_section(
    report: ControlsReport | None,
    *,
    table: Callable[..., Any],
    esc: Callable[[Any], str],
) -> str:
    """HTML of the section ("" without controls), built with the report's ``table`` and
    ``esc`` (passed in by :mod:`persona_collapse.report.html`, which imports this module)."""
    if report is None or not report.rows:
        return ""

    parts = [
        "<p>Non-unanimity (share of cells whose repeated answers are not all equal) and "
        "normalised Gini (1 − Σp², divided by 1 − 1/k) of persona cells and of the "
        "control tasks (no persona), with the change against the family's base.</p>",
        table(
            [
                "family",
                "variant",
                "measure",
                "non-unanimity",
                "change vs base",
                "norm. Gini",
                "change vs base",
                "accuracy",
            ],
            section_rows(report),
            left=3,
        ).markup,
    ]
    if report.deltas:
        parts.append(
            "<p>Control-task deltas (variant − base; paired bootstrap over shared items, "
            "then repetitions, percentile CI; p inverts that interval (below 0.05 exactly "
            "when the 95 % CI excludes 0), Holm-adjusted across the study):</p>"
        )
        parts.append(
            table(
                ["family", "variant", "task", "measure", "delta", "95 % CI", "Holm p"],
                [
                    [
                        d.family,
                        d.label,
                        d.task,
                        d.measure,
                        _signed(d.point),
                        f"[{d.lo:+.3f}, {d.hi:+.3f}]",
                        f"{d.p_holm:.3g}",
                    ]
                    for d in report.deltas
                ],
                left=4,
            ).markup
        )
    if report.verdicts:
        items = "".join(f"<li>{esc(v.text)}</li>" for v in report.verdicts)
        parts.append(f"<ul>{items}</ul>")
    return "\n".join(parts)


__all__ = [
    "ControlDelta",
    "ControlVerdict",
    "ControlsReport",
    "InstabilityRow",
    "PersonaGap",
    "VerdictKind",
    "build_verdicts",
    "render_section",
    "section_rows",
]
