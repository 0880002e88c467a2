"""The "Is it persona-specific?" section: verdicts follow the significance results only."""

from __future__ import annotations

import dataclasses

from persona_collapse.report.controls import (
    ControlDelta,
    ControlsReport,
    InstabilityRow,
    PersonaGap,
    build_verdicts,
    render_section,
    section_rows,
)
from persona_collapse.report.html import esc, table

ROWS = (
    InstabilityRow("f", "base", "mfq30 persona", 0.2, 0.02, 0.1, 0.01, None, None),
    InstabilityRow("f", "ins", "mfq30 persona", 0.5, 0.03, 0.3, 0.02, None, None),
    InstabilityRow("f", "base", "mmlu", 0.1, 0.02, 0.05, 0.01, 0.8, 0.03),
    InstabilityRow("f", "ins", "mmlu", 0.12, 0.02, 0.06, 0.01, 0.79, 0.03),
)


def report(
    acc: tuple[float, float, float, float], gap: tuple[float, float, float]
) -> ControlsReport:
    point, lo, hi, p_holm = acc
    base = ControlsReport(
        rows=ROWS,
        deltas=(ControlDelta("f", "ins", "mmlu", "accuracy", point, lo, hi, p_holm, p_holm),),
        gaps=(PersonaGap("f", "ins", "mmlu", *gap),),
        alpha=0.05,
        verdicts=(),
        bases=(("f", "base"),),
    )
    return dataclasses.replace(base, verdicts=build_verdicts(base))


def test_selective_when_the_gap_excludes_zero_and_accuracy_holds() -> None:
    (v,) = report((-0.01, -0.05, 0.03, 0.6), (0.28, 0.2, 0.36)).verdicts
    assert v.kind == "selective"
    assert v.text == (
        "f/ins: persona instability rose more than non-persona instability "
        "(vs mmlu: difference +0.280, 95 % CI [+0.200, +0.360])."
    )


def test_broad_when_accuracy_fell_significantly_after_holm() -> None:
    (v,) = report((-0.3, -0.36, -0.24, 0.001), (0.1, -0.05, 0.25)).verdicts
    assert v.kind == "broad" and "accuracy fell significantly: mmlu -0.300" in v.text


def test_no_stronger_than_the_statistics() -> None:
    # Accuracy fell but not significantly after Holm; the gap's CI holds 0.
    (v,) = report((-0.3, -0.36, -0.24, 0.2), (0.1, -0.05, 0.25)).verdicts
    assert v.kind == "none" and v.text.startswith("f/ins: no significant difference")
    # A rise of accuracy is never "degradation".
    (v,) = report((0.3, 0.24, 0.36, 0.001), (0.1, -0.05, 0.25)).verdicts
    assert v.kind == "none"


def test_section_shows_change_against_base() -> None:
    r = report((-0.01, -0.05, 0.03, 0.6), (0.28, 0.2, 0.36))
    rows = section_rows(r)
    ins_mfq = next(x for x in rows if x[1] == "ins" and x[2] == "mfq30 persona")
    assert ins_mfq[4] == "+0.300 (+150 %)"
    assert next(x for x in rows if x[1] == "base")[4] == ""
    page = render_section(r, table=table, esc=esc)
    assert "rose more than" in page and "[-0.050, +0.030]" in page
    assert render_section(None, table=table, esc=esc) == ""
