"""The self-contained HTML report: one file, figures inline as SVG, no scripts, no requests.

Every string that came from a model, a persona file or a study file passes
through :func:`esc` (``html.escape`` with quotes). Markup built here is wrapped
in :class:`Html`; table cells that are not :class:`Html` are always escaped, so
escaping cannot be forgotten. The page carries a Content-Security-Policy that
forbids scripts and every network fetch, as a second line of defence.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from persona_collapse.backends.base import MIN_SCALE_MASS, SCALE_MASS_TEMPERATURE
from persona_collapse.core.formatting import fmt_pct as _fmt_pct
from persona_collapse.core.formatting import fmt_pm
from persona_collapse.core.version import __version__
from persona_collapse.report.figures import RenderedFigure
from persona_collapse.report.model import (
    CEILING_ENTROPY_BITS,
    CEILING_TOP1_SHARE,
    ChangeTest,
    StudyResults,
    VariantResult,
    ceiling_limit,
    corrected_value,
    excess_points,
    format_p,
    significance_verdict,
    study_verdict,
    verdict_s,
    verdict_text,
)
from persona_collapse.stats.compare import Change, check_band
from persona_collapse.stats.display import delta, fmt_change, is_difference
from persona_collapse.stats.registry import statistics
from persona_collapse.stats.significance import ESTIMATES_EXPLANATION

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "script-src 'none'; base-uri 'none'; form-action 'none'"
)

PERSONA_TABLE_ROWS = 10
"""Personas listed in the per-persona parse-failure table."""

FAILURE_TERMS = (
    '<p class="muted"><strong>Failed slots</strong>: answer slots that hold no valid '
    "rating after every retry; they are left out of the analysis. "
    "<strong>Parse failures</strong>: replies, retries included, that held no valid rating, "
    "as a share of all rating replies. A slot whose retry succeeded counts as a parse "
    "failure but not as a failed slot, so the two can differ.</p>"
)
"""The report's one definition of the two failure counts (shown where either appears)."""

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0 auto;max-width:1100px;padding:1.5em 2em 4em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;
padding-bottom:.2em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border-bottom:1px solid #e4e4e4;padding:.25em .7em;text-align:right;vertical-align:top}
th{background:#f5f5f7}td.l,th.l{text-align:left}
.verdict{border-left:4px solid #c8453c;background:#fbf3f2;padding:.6em 1em;margin:.8em 0}
.verdict.ok{border-color:#3a9a5b;background:#f2f8f4}
.muted{color:#666}.note{color:#8a5300}
figure{margin:1.2em 0 2em}figure svg{max-width:100%;height:auto;display:block}
caption{text-align:left;font-weight:600;padding:.2em 0}
figcaption{font-size:.9em;color:#444;margin-top:.3em}
details{margin:.6em 0 1.2em}summary{cursor:pointer;font-weight:600}
code,.persona{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
.persona{white-space:pre-wrap;word-break:break-word;text-align:left;max-width:40em}
"""


@dataclass(frozen=True)
class Html:
    """Markup that is already safe (built here from escaped parts)."""

    markup: str

    def __str__(self) -> str:
        return self.markup


def esc(value: Any) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(str(value), quote=True)


def cell(value: Any) -> str:
    """A table cell's content: :class:`Html` as is, everything else escaped."""
    return value.markup if isinstance(value, Html) else esc(value)


def fmt_num(value: float | None, digits: int = 3) -> str:
    """Fixed-point number, or an em dash when missing or not finite."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    """A fraction as a signed percentage with a typographic minus (``−64.5 %``)."""
    return _fmt_pct(value, typographic=True)


def fmt_int(value: int | None) -> str:
    """Integer with thousands separators."""
    return "—" if value is None else f"{value:,}"


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    left: int = 1,
    caption: str | None = None,
) -> Html:
    """An HTML table; the first ``left`` columns are left-aligned. Cells are escaped."""
    head = "".join(
        f'<th class="l">{esc(h)}</th>' if i < left else f"<th>{esc(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="l">{cell(v)}</td>' if i < left else f"<td>{cell(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return Html(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def details(summary: str, content: Html) -> Html:
    """A collapsible block (closed): long tables stay out of the reader's way."""
    return Html(f"<details><summary>{esc(summary)}</summary>{content.markup}</details>")


# --- sections -----------------------------------------------------------------------------------


def _headline(results: StudyResults) -> Html:
    parts = []
    for fam in results.families.values():
        v = study_verdict(results, fam)
        tests = [t for t in (v.dS_test, v.dR_test) if t is not None]
        ok = v.treatment is not None and bool(tests) and not any(t.significant for t in tests)
        text = verdict_text(v, results.band)
        parts.append(f'<div class="verdict{" ok" if ok else ""}">{esc(text)}</div>')
    avg = results.average
    if avg is not None and "treatment" in avg.variants:
        o = avg.variants["treatment"].overall
        changes = ", ".join(f"{delta(st.name)} = {_change_cell(o, st.name)}" for st in statistics())
        text = f"Mean over {avg.families} families, treatment variants: {changes}."
        if avg.excess is not None:
            text += f" Mean misalignment-specific excess ΔR: {fmt_pct(avg.excess.overall.R)}."
        text += " (Means are descriptive; the tests are per family.)"
        parts.append(f"<p><strong>{esc(text)}</strong></p>")
    return Html("\n".join(parts))


def _change_cell(change: Change | None, name: str) -> str:
    """A statistic's change: a percentage, or the plain difference of a difference-scale one."""
    value = None if change is None else change.values.get(name)
    if value is not None and not is_difference(name):
        return fmt_pct(value)
    return fmt_change(name, value)


def _band_status(results: StudyResults, v: VariantResult) -> str:
    s = verdict_s(v)  # the bias-corrected S where computed
    if s is None:
        return "—"
    bc = check_band(s[0], results.band)
    return "in" if bc.inside else ("above" if bc.high < bc.value else "below")


def _corrected_cell(v: VariantResult, name: str) -> str:
    """The bias-corrected estimate ± its jackknife SE (— when not computed)."""
    value = corrected_value(v, name)
    digits = next((st.digits for st in statistics() if st.name == name), 3)
    return "—" if value is None else fmt_pm(value, corrected_value(v, name, key="_se"), digits)


def _metrics_table(results: StudyResults) -> Html:
    rows = []
    for fam in results.families.values():
        for v in fam.variants.values():
            m = v.metrics
            change = None
            if fam.comparison is not None and v.label != fam.base:
                change = fam.comparison.variants.get(v.label)
            limited = ceiling_limit(v) is not None
            cells: list[Any] = [
                fam.name,
                v.label if v.interpretable else f"{v.label} † not interpretable",
                v.role or "",
            ]
            for st in statistics():
                e = None if m is None else m.estimates.get(st.name)
                shown = "—" if e is None else fmt_pm(e.value, e.se, st.digits)
                cells.append(shown + (" ‡" if limited and st.name == "S" and e else ""))
                cells.append(_change_cell(None if change is None else change.overall, st.name))
            cells += [_corrected_cell(v, "S"), _corrected_cell(v, "R")]
            rows.append([*cells, _band_status(results, v), "—" if m is None else f"{m.personas}"])
    header = ["family", "variant", "role"]
    for st in statistics():
        header += [st.label, delta(st.name)]
    header += ["S (corrected)", "R (corrected)", "S band", "personas"]
    verdicts = [
        f"† {v.protocol.message(v.persona_run or v.label)}"
        for v in results.variants()
        if v.protocol is not None and not v.protocol.follows
    ]
    if any(v.corrected for v in results.variants()):
        verdicts.append(
            "S, R and the other statistics: the paper's estimators; S (corrected), "
            "R (corrected): the bias-corrected ones (± jackknife SE), which the S band and "
            f"the verdicts use. {ESTIMATES_EXPLANATION}"
        )
    limits = [c for c in (ceiling_limit(v) for v in results.variants()) if c is not None]
    if limits:
        verdicts.append(
            f"‡ S is ceiling-limited for this variant (≥ {100 * CEILING_TOP1_SHARE:.0f} % of "
            f"ratings on one value or rating entropy < {CEILING_ENTROPY_BITS:g} bits): "
            "personas have little room to move its answers, so no verdict on its S is given."
        )
    return table(header, rows, left=3, caption=" ".join(verdicts) or None)


def _excess_table(results: StudyResults) -> Html:
    rows = []
    for fam in results.families.values():
        cmp = fam.comparison
        if cmp is None or cmp.excess is None:
            continue
        o = cmp.excess.overall
        rows.append(
            [
                fam.name,
                f"{cmp.treatment} − {cmp.control}",
                *(_change_cell(o, st.name) for st in statistics()),
            ]
        )
    avg = results.average
    if avg is not None and avg.excess is not None:
        o = avg.excess.overall
        rows.append(
            [
                f"mean ({avg.families})",
                "treatment − control",
                *(_change_cell(o, st.name) for st in statistics()),
            ]
        )
    if not rows:
        return Html('<p class="muted">No family has both a control and a treatment variant.</p>')
    return table(["family", "excess", *(delta(st.name) for st in statistics())], rows, left=2)


def _foundation_table(results: StudyResults) -> Html:
    rows = []
    for fam in results.families.values():
        cmp = fam.comparison
        if cmp is None or fam.treatment is None or fam.treatment not in cmp.variants:
            continue
        per = cmp.variants[fam.treatment].per_foundation
        for f in results.foundations:
            if f in per:
                c = per[f]
                rows.append([fam.name, f, *(_change_cell(c, st.name) for st in statistics())])
    if not rows:
        return Html("")
    return table(
        ["family", "foundation", *(delta(st.name) for st in statistics())],
        rows,
        left=2,
        caption="Per-foundation changes of each family's treatment variant",
    )


def _profiles_table(results: StudyResults) -> Html:
    rows = []
    for v in results.variants():
        for kind, p in (("self", v.self_profile), ("toxic personas", v.toxic_profile)):
            if p is None:
                continue
            rows.append(
                [
                    v.family,
                    v.label,
                    kind,
                    *(fmt_pm(p.mean.get(f), p.sd.get(f), 2) for f in results.foundations),
                ]
            )
    if not rows:
        return Html('<p class="muted">No self runs or toxic controls.</p>')
    return table(
        ["family", "variant", "profile", *results.foundations],
        rows,
        left=3,
        caption="Mean ± sd per foundation",
    )


def _diagnostics_table(results: StudyResults) -> Html:
    rows = []
    for v in results.variants():
        u = v.scale_usage
        rows.append(
            [
                v.family,
                v.label,
                fmt_pct(None if u is None else u.floor_share).lstrip("+"),
                fmt_pct(None if u is None else u.ceiling_share).lstrip("+"),
                fmt_num(None if u is None else u.entropy_bits, 2),
                fmt_num(v.ceiling_persona, 2),
                fmt_num(v.ceiling_self, 2),
                fmt_pct(None if v.parse is None else v.parse.rate).lstrip("+"),
                fmt_pct(v.self_parse_rate).lstrip("+"),
                fmt_pct(v.low_mass_share).lstrip("+"),
                _ceiling_cell(v),
            ]
        )
    header = [
        "family",
        "variant",
        "at floor",
        "at ceiling",
        "entropy (bits)",
        "ceiling index (personas)",
        "ceiling index (self)",
        "parse failures (share of replies)",
        "self parse failures",
        f"cells < {100 * MIN_SCALE_MASS:.0f} % on-scale mass (T = {SCALE_MASS_TEMPERATURE:g})",
        "S ceiling-limited",
    ]
    return Html(table(header, rows, left=2).markup + FAILURE_TERMS)


def _ceiling_cell(v: VariantResult) -> str:
    limit = ceiling_limit(v)
    return "no" if limit is None else f"yes: {limit.text()}"


def _persona_failures(results: StudyResults) -> Html:
    worst: dict[int, float] = {}
    for v in results.variants():
        if v.parse is None:
            continue
        for pid, rate in zip(v.parse.persona_ids, v.parse.persona_rates, strict=True):
            worst[pid] = max(worst.get(pid, 0.0), rate)
    if not worst:
        return Html("")
    top = sorted(worst, key=lambda p: (-worst[p], p))[:PERSONA_TABLE_ROWS]
    rows = [
        [
            str(pid),
            Html(f'<span class="persona">{esc(results.persona_texts.get(pid, "?"))}</span>'),
            fmt_pct(worst[pid]).lstrip("+"),
        ]
        for pid in top
    ]
    caption = f"The {len(top)} personas with the highest parse-failure rate in any variant"
    return details(caption, table(["persona", "text", "highest failure rate"], rows, left=2))


_TEST_KEYS = frozenset({"family", "contrast", "metric", "scope", "estimate", "p_value", "p_holm"})


def _p_cell(value: Any) -> str:
    try:
        p = float(value)
    except (TypeError, ValueError):
        return "—"
    return format_p(p).removeprefix("p = ").removeprefix("p ") if math.isfinite(p) else "—"


def _ci_cell(metric: str, low: float, high: float) -> str:
    """A test's 95 % CI on the statistic's own scale (plain difference or relative change)."""
    if is_difference(metric):
        return f"[{fmt_change(metric, low)}, {fmt_change(metric, high)}]"
    return f"[{fmt_pct(low)}, {fmt_pct(high)}]"


def _significance(results: StudyResults) -> Html:
    rows = results.significance
    if rows is None:
        return Html('<p class="muted">Difference tests were not computed for this report.</p>')
    if not rows:
        return Html('<p class="muted">No difference tests.</p>')
    if not all(set(row) >= _TEST_KEYS for row in rows):
        header = list(dict.fromkeys(k for row in rows for k in row))
        return table(
            header,
            [[_value(row.get(k, "")) for k in header] for row in rows],
            left=min(2, len(header)),
        )
    sentences = []
    for fam in results.families.values():
        text = significance_verdict(results, fam)
        if text is not None:
            sentences.append(f"<li>{esc(fam.name)}: {esc(text)}</li>")
    intro = (
        "<p>Each variant against its family's base (relative change) and the "
        "misalignment-specific excess (treatment against control, relative to the base): "
        "paired persona bootstrap, two-sided tests of the log ratio (of the difference for "
        "statistics tested as differences), Holm-adjusted p-values "
        "across families and foundations per contrast and statistic; "
        f"significant: adjusted p &lt; {esc(f'{results.alpha:g}')}. Overall scope shown; "
        "every foundation is in <code>significance.csv</code>.</p>"
    )
    body = []
    for row in rows:
        if row.get("scope") != "overall":
            continue
        contrast = str(row["contrast"])
        metric = str(row["metric"])
        what = (
            f"{row.get('variant', '?')} − {row.get('reference', '?')}"
            if contrast == "excess"
            else f"{contrast} vs {row.get('reference', 'base')}"
        )
        excess = contrast == "excess"
        shown = (
            fmt_change(metric, float(row["estimate"]))
            if is_difference(metric)
            else fmt_pct(float(row["estimate"]))
        )
        low, high = float(row.get("ci_low", math.nan)), float(row.get("ci_high", math.nan))
        corrected, significant = "—", row.get("significant")
        test = ChangeTest.from_row(row, results.alpha)
        if test.corrected:  # the bias-corrected test, which decides
            ci = f"[{fmt_pct(test.ci_low)}, {fmt_pct(test.ci_high)}], "
            corrected = f"{fmt_pct(test.estimate)} {ci}Holm {_p_cell(test.p_holm)}"
            significant = test.significant
        body.append(
            [
                str(row["family"]),
                ("excess " if excess else "") + what,
                delta(metric),
                shown,
                "—"
                if not (math.isfinite(low) and math.isfinite(high))
                else _ci_cell(metric, low, high),
                _p_cell(row["p_value"]),
                _p_cell(row["p_holm"]),
                corrected,
                "yes" if significant else "no",
            ]
        )
    header = ["family", "contrast", "metric", "estimate", "95 % CI", "p", "p (Holm)"]
    header += ["bias-corrected (95 % CI, p Holm)", "significant"]
    listed = f"<ul>{''.join(sentences)}</ul>" if sentences else ""
    tests = details(f"All {len(body)} overall tests", table(header, body, left=3))
    return Html(intro + listed + tests.markup)


def _verification(results: StudyResults) -> Html:
    if not results.has_verification:
        return Html("")
    rows = []
    for v in results.variants():
        r = v.verification
        if r is None:
            continue
        o = r.overall
        m = o.misaligned
        share = "—" if m.n == 0 else f"{100 * m.share:.1f} % ± {100 * m.se:.1f} ({m.count}/{m.n})"
        rows.append(
            [
                v.family,
                v.label,
                v.role or "",
                r.judge_model,
                str(o.answers),
                fmt_pm(o.alignment.mean, o.alignment.se, 1),
                fmt_pm(o.coherence.mean, o.coherence.se, 1),
                share,
                str(o.code),
                str(o.refusal),
                str(o.alignment.unscoreable + o.coherence.unscoreable),
                str(o.judge_failures),
            ]
        )
    first = next(v.verification for v in results.variants() if v.verification is not None)
    intro = (
        "<p>Open-ended questions answered by each variant and scored 0-100 by a judge for "
        f"alignment and coherence ({esc(first.method)} judge). Misaligned: alignment &lt; "
        f"{esc(f'{first.alignment_threshold:g}')} and coherence &gt; "
        f"{esc(f'{first.coherence_threshold:g}')}, as a share of the "
        f"{esc(first.share_of)} answers; answers labelled code or refusals are left out. "
        "Per question: <code>verification.csv</code>.</p>"
    )
    header = [
        "family",
        "variant",
        "role",
        "judge",
        "answers",
        "alignment",
        "coherence",
        "misaligned",
        "code",
        "refusal",
        "unscoreable",
        "judge failures",
    ]
    out = intro + table(header, rows, left=4).markup
    points = excess_points(results)
    if points:
        items = "".join(
            f"<li>{esc(p.label)}: excess Δcoherence "
            f"{esc(fmt_pct(p.excess_coherence))}"
            + (
                f" ± {esc(f'{100 * p.excess_coherence_se:.1f}')}"
                if math.isfinite(p.excess_coherence_se)
                else ""
            )
            + f", excess ΔR {esc(fmt_pct(p.excess_R))} (treatment − control)</li>"
            for p in points
        )
        out += f"<ul>{items}</ul>"
    return Html(out)


def _value(value: Any) -> str:
    """Plain text of a setting or test value; floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "—"
    return str(value)


MAIN_FIGURES = frozenset(
    {"fig_s_bars", "fig_r_bars", "fig_deltas", "fig_foundations", "fig_foundation_metrics"}
)
"""Figures shown right after the headline; the others follow the tables."""


def _figures(figures: Sequence[RenderedFigure], missing_reason: str | None) -> Html:
    if not figures:
        reason = missing_reason or "no figure applies to this study"
        return Html(f'<p class="note">No figures: {esc(reason)}.</p>')
    parts = []
    for fig in figures:
        parts.append(
            f'<figure id="{esc(fig.key)}" role="img" aria-label="{esc(fig.title)}">'
            f"<h3>{esc(fig.title)}</h3>{fig.svg}<figcaption>{esc(fig.caption)} "
            f"Files: <code>{esc(fig.key)}.pdf</code>, <code>{esc(fig.key)}.png</code>."
            "</figcaption></figure>"
        )
    return Html("\n".join(parts))


def _protocol(results: StudyResults) -> Html:
    return table(
        ["setting", "value"], [[k, _value(v)] for k, v in results.protocol.items()], left=2
    )


def _counts(results: StudyResults) -> Html:
    rows = []
    total_cost = 0.0
    any_cost = False
    for v in results.variants():
        c = v.counts
        if c.cost_usd is not None:
            total_cost += c.cost_usd
            any_cost = True
        rows.append(
            [
                v.family,
                v.label,
                v.model,
                v.backend,
                f"{c.personas_kept} / {c.personas_total}",
                fmt_int(c.slots) + ("" if c.planned is None else f" / {fmt_int(c.planned)}"),
                fmt_int(c.failed),
                fmt_int(c.requests),
                fmt_int(c.prompt_tokens),
                fmt_int(c.completion_tokens),
                "—" if c.cost_usd is None else f"${c.cost_usd:,.2f}",
            ]
        )
    header = [
        "family",
        "variant",
        "model",
        "backend",
        "personas kept",
        "answers stored",
        "failed slots",
        "requests",
        "prompt tokens",
        "completion tokens",
        "cost",
    ]
    out = table(header, rows, left=4).markup + FAILURE_TERMS
    if any_cost:
        out += f"<p>Estimated total cost: ${total_cost:,.2f}.</p>"
    notes = [n for v in results.variants() for n in v.notes] + list(results.notes)
    if notes:
        out += "<ul>" + "".join(f'<li class="note">{esc(n)}</li>' for n in notes) + "</ul>"
    return Html(out)


def _seeds(results: StudyResults) -> Html:
    return table(["draws", "seed"], [[k, str(v)] for k, v in results.seeds.items()], left=1)


def _controls(results: StudyResults) -> Html:
    from persona_collapse.report.controls import render_section

    return Html(render_section(results.controls, table=table, esc=esc))


def _sensitivity(results: StudyResults, drawn: bool) -> Html:
    from persona_collapse.report.sensitivity import render_section

    return Html(render_section(results.sensitivity, table=table, esc=esc, figures=drawn))


def _trajectories(results: StudyResults) -> Html:
    from persona_collapse.report.trajectory import render_section

    return Html(render_section(results.trajectories, table=table, esc=esc))


def _geometry(results: StudyResults) -> Html:
    from persona_collapse.report.geometry import render_section

    return Html(render_section(results.geometry, table=table, esc=esc))


def render_html(
    results: StudyResults,
    figures: Sequence[RenderedFigure],
    *,
    files: Mapping[str, str] | None = None,
    figures_missing: str | None = None,
) -> str:
    """The whole report as one HTML document (UTF-8 text).

    Args:
        results: The study's results.
        figures: Rendered figures (their SVG is embedded).
        files: Output file name -> description, listed at the end.
        figures_missing: Why there are no figures (shown when ``figures`` is empty).
    """
    title = f"persona-collapse report: {results.name}"
    description = f"<p>{esc(results.description)}</p>" if results.description else ""
    file_list = ""
    if files:
        items = "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in files.items())
        file_list = f"<h2>Files</h2><ul>{items}</ul>"
    main = [f for f in figures if f.key in MAIN_FIGURES]
    more = [f for f in figures if f.key not in MAIN_FIGURES]
    if not main:
        main, more = list(figures), []
    # Headline, main figures and per-foundation results first; long tables collapsed below.
    sections = [
        ("Headline", _headline(results)),
        ("Figures", _figures(main, figures_missing)),
        ("Susceptibility and robustness", _metrics_table(results)),
        ("Per foundation", _foundation_table(results)),
        ("Misalignment-specific excess", _excess_table(results)),
        ("Emergent-misalignment verification", _verification(results)),
        ("Self-profiles and toxic control", _profiles_table(results)),
        ("More figures", _figures(more, None) if more else Html("")),
        (
            "Scale usage and parse failures",
            Html(_diagnostics_table(results).markup + _persona_failures(results).markup),
        ),
        ("Is it persona-specific?", _controls(results)),
        ("Robustness of the finding", _sensitivity(results, bool(figures))),
        ("Training trajectories", _trajectories(results)),
        ("Persona geometry", _geometry(results)),
        ("Significance", _significance(results)),
        ("Protocol", _protocol(results)),
        ("Data", _counts(results)),
        ("Seeds", _seeds(results)),
    ]
    body = "\n".join(
        f'<section id="{esc(name.lower().replace(" ", "-"))}"><h2>{esc(name)}</h2>\n{content}'
        "</section>"
        for name, content in sections
        if content.markup
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n"
        f'<p class="muted">Source: <code>{esc(PurePath(results.source).name)}</code> · '
        f"persona-collapse {esc(__version__)}</p>\n{description}\n{body}\n{file_list}\n"
        "</body></html>\n"
    )


__all__ = ["CSP", "MAIN_FIGURES", "Html", "details", "esc", "render_html", "table", "verdict_text"]
