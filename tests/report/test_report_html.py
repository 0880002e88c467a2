"""The HTML report is self-contained and shows hostile strings as text (checked on the markup)."""

from __future__ import annotations

import dataclasses
import html
import re
from html.parser import HTMLParser

from _report_helpers import HOSTILE_DESCRIPTION, HOSTILE_FAMILY, HOSTILE_PERSONA

from persona_collapse.report.html import CSP, esc, render_html, table
from persona_collapse.report.model import ChangeTest, Verdict, verdict_text
from persona_collapse.study import StudyOutcome

FORBIDDEN_TAGS = {"script", "img", "iframe", "link", "object", "embed", "audio", "video", "base"}
URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "data", "poster", "srcset"}


class _Page(HTMLParser):
    """Tags, attributes and text of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def test_report_is_self_contained(hostile_outcome: StudyOutcome) -> None:
    page = hostile_outcome.files.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    parsed = _parse(page)
    metas = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv")]
    assert metas and metas[0]["content"] == CSP
    names = {t for t, _ in parsed.tags}
    assert not names & FORBIDDEN_TAGS, names & FORBIDDEN_TAGS
    for tag, attrs in parsed.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)  # no event handlers
        for key, value in attrs.items():
            if key in URL_ATTRIBUTES:
                assert (value or "").startswith(("#", "data:")), (tag, key, value)
            if "url(" in (value or ""):
                assert re.fullmatch(r".*url\(#[^)]*\).*", value or ""), (tag, key, value)
    assert "@import" not in page and "url(http" not in page
    svgs = [t for t, _ in parsed.tags if t == "svg"]
    assert len(svgs) == len(hostile_outcome.files.figures) >= 8
    figures = {a.get("id") for t, a in parsed.tags if t == "figure"}
    assert {"fig_s_bars", "fig_profiles", "fig_parse_failures"} <= figures


def test_hostile_strings_are_escaped(hostile_outcome: StudyOutcome) -> None:
    page = hostile_outcome.files.html.read_text(encoding="utf-8")
    for raw in (HOSTILE_PERSONA, HOSTILE_FAMILY, HOSTILE_DESCRIPTION):
        assert raw not in page
        assert html.escape(raw, quote=True) in page, raw
    text = "".join(_parse(page).text)
    for raw in (HOSTILE_PERSONA, HOSTILE_FAMILY):
        assert raw in text  # shown to the reader as text


def test_hostile_strings_are_escaped_in_latex(hostile_outcome: StudyOutcome) -> None:
    tex = (hostile_outcome.output_dir / "tables" / "table_metrics.tex").read_text()
    assert r"fam\textless{}img src=y onerror=alert(3)\textgreater{}" in tex


def test_table_cells_are_escaped_unless_marked_safe() -> None:
    markup = table(["<h>"], [["<b>x</b>"], ["a & b"]]).markup
    assert "&lt;h&gt;" in markup and "&lt;b&gt;x&lt;/b&gt;" in markup and "a &amp; b" in markup
    assert esc("\"q\" 's'") == "&quot;q&quot; &#x27;s&#x27;"


def _tested(estimate: float, low: float, high: float, p_holm: float) -> ChangeTest:
    return ChangeTest(estimate, low, high, p_holm, p_holm < 0.05)


def test_verdict_text_claims_only_what_the_tests_support() -> None:
    # Issue 10.1-10.2: a rise/drop only when significant after Holm; the signed share.
    v = Verdict(
        family="f", base_S=0.75, base_S_se=0.02, base_in_band=True, treatment="insecure",
        treatment_S=1.2, treatment_S_se=0.03, leaves_band=True, side="above", dS=0.6, dR=-0.7,
        dsigma_bar=2.3, control="secure", control_dR=-0.3, excess_R=-0.4,
        specific_share=0.4 / 0.7, specific_share_ci=(0.3, 0.8),
        dS_test=_tested(0.6, 0.4, 0.8, 0.001), dR_test=_tested(-0.7, -0.8, -0.6, 0.0001),
        control_dR_test=_tested(-0.3, -0.4, -0.2, 0.001),
        excess_R_test=_tested(-0.4, -0.5, -0.3, 0.001),
    )  # fmt: skip
    text = verdict_text(v, (0.66, 0.83))
    assert "S rises significantly (ΔS +60.0 %, 95 % CI [+40.0 %, +80.0 %]" in text
    assert "leaves the frontier S band [0.66, 0.83] (above it;" in text
    assert "R drops significantly (ΔR −70.0 %" in text
    assert "Misalignment-specific share of ΔR: +57.1 % (95 % CI [+30.0 %, +80.0 %])" in text
    # Not significant: no rise, no band exit.
    weak = dataclasses.replace(v, dS_test=_tested(0.11, -0.05, 0.3, 0.29))
    text = verdict_text(weak, (0.66, 0.83))
    assert "No significant change in S (ΔS +11.0 %, 95 % CI [−5.0 %, +30.0 %]" in text
    assert "rises" not in text and "leaves" not in text and "not significant" in text
    # A base outside the band: no band wording about the treatment.
    outside = dataclasses.replace(v, base_S=0.9, base_in_band=False)
    text = verdict_text(outside, (0.66, 0.83))
    assert "already lies outside" in text and "leaves" not in text
    # A wrong-sign excess whose interval covers 0 is "none", with its sign kept.
    wrong = dataclasses.replace(v, specific_share=-0.014, specific_share_ci=(-0.18, 0.15))
    assert "none detectable (−1.4 %, 95 % CI [−18.0 %, +15.0 %])" in verdict_text(wrong, (0, 1))
    clear = dataclasses.replace(v, specific_share=-0.2, specific_share_ci=(-0.3, -0.1))
    assert "wrong sign" in verdict_text(clear, (0, 1))
    untested = verdict_text(
        Verdict("f", 0.7, 0.01, True, "t", 0.72, 0.01, False, "inside", 0.03, -0.1, 0.1),
        (0.66, 0.83),
    )
    assert "stays inside" in untested and "No control variant" in untested
    assert "not tested, so no rise or drop is claimed" in untested


def test_render_without_figures_says_why(hostile_outcome: StudyOutcome) -> None:
    page = render_html(hostile_outcome.results, [], figures_missing="matplotlib missing")
    assert "No figures: matplotlib missing." in page and "<svg" not in page
    sig = render_html(
        hostile_outcome.results.__class__(
            **{**hostile_outcome.results.__dict__, "significance": ({"test": "<x>", "p": 0.01},)}
        ),
        [],
    )
    assert "&lt;x&gt;" in sig and ">0.01</td>" in sig


def test_variant_that_does_not_follow_the_protocol_is_marked(
    hostile_outcome: StudyOutcome,
) -> None:
    # Issue 15.4: numbers stay, marked as not interpretable, with the verdict and its reasons.
    from persona_collapse.engine.protocol import check_exact

    results = hostile_outcome.results
    check = check_exact([0.01, 0.02, 0.6])
    assert check is not None and not check.follows
    families = {}
    for name, fam in results.families.items():
        variants = {
            label: dataclasses.replace(v, protocol=check, low_mass_share=2 / 3)
            for label, v in fam.variants.items()
        }
        families[name] = dataclasses.replace(fam, variants=variants)
    page = render_html(dataclasses.replace(results, families=families), [])
    text = html.unescape(page)
    assert "† not interpretable" in text
    assert "does not follow the protocol: S and R are not interpretable" in text
    assert "on-scale mass (T = 1)" in text and "66.7 %" in text
    plain = render_html(results, [])
    assert "not interpretable" not in html.unescape(plain)


def test_page_puts_headline_and_main_figures_first(hostile_outcome: StudyOutcome) -> None:
    # Issue 10.10: headline, main figures, per-foundation results; long tables collapsed.
    page = hostile_outcome.files.html.read_text(encoding="utf-8")
    order = [
        page.index(f'<section id="{name}">')
        for name in ("headline", "figures", "per-foundation", "significance", "protocol")
    ]
    assert order == sorted(order)
    figures = page.split('<section id="figures">')[1].split("</section>")[0]
    assert 'id="fig_s_bars"' in figures and 'id="fig_deltas"' in figures
    assert 'id="fig_parse_failures"' not in figures
    significance = page.split('<section id="significance">')[1].split("</section>")[0]
    assert "<details><summary>All " in significance
    assert "</table></details>" in significance


def test_significance_cis_are_on_each_statistics_own_scale(hostile_outcome: StudyOutcome) -> None:
    # A difference-scale statistic's CI is a plain difference, never a percentage.
    from persona_collapse.stats.display import delta, is_difference
    from persona_collapse.stats.registry import statistics

    by_label = {delta(s.name): s.name for s in statistics()}
    page = hostile_outcome.files.html.read_text(encoding="utf-8")
    significance = page.split('<section id="significance">')[1].split("</section>")[0]
    seen = {"difference": 0, "relative": 0}
    for row in significance.split("<tr>")[1:]:
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if len(cells) < 5 or cells[4] == "—":
            continue
        if is_difference(by_label[cells[2]]):
            assert "%" not in cells[4], cells
            seen["difference"] += 1
        else:
            assert "%" in cells[4], cells
            seen["relative"] += 1
    assert seen["difference"] > 0 and seen["relative"] > 0
