"""Every figure stays legible at 1, 4 and 12 families (issue 10.6).

The figures are drawn for the paper's reference data (4 families; skips without
../shared) and for a small demo, each also cut to its first family and repeated to
12; every text artist (titles, labels, tick labels, legends, annotations) must be at
least :data:`MIN_TEXT_PT` at the printed size, which is the figure's own size when it
is no wider than the report's column (:data:`MAX_WIDTH_IN`), and proportionally less
when it is wider.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib as mpl
import pytest
from matplotlib.text import Text

from persona_collapse.core.config import AnalysisConfig
from persona_collapse.report.figures import FIGURE_STYLE, FIGURES, MAX_WIDTH_IN, MIN_TEXT_PT
from persona_collapse.report.model import StudyResults
from persona_collapse.study.demo import run_demo
from persona_collapse.study.reproduce import reproduce

FEW_DRAWS = AnalysisConfig(n_persona_boot=40, n_rerun_boot=8)


@pytest.fixture(scope="module")
def reference_results(
    reference_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> StudyResults:
    out = tmp_path_factory.mktemp("legible-reproduce")
    return reproduce(reference_dir, out, analysis=FEW_DRAWS, figures=False, force=True).results


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory: pytest.TempPathFactory) -> StudyResults:
    out = tmp_path_factory.mktemp("legible-demo")
    outcome = run_demo(
        out, max_personas=6, repetitions=3, progress=False, analysis=FEW_DRAWS, figures=False
    )
    return outcome.results


def with_families(results: StudyResults, n: int) -> StudyResults:
    """``results`` with ``n`` families: its own, cut or repeated under new names."""
    own = list(results.families.values())
    families = {}
    for i in range(n):
        fam = own[i % len(own)]
        name = fam.name if i < len(own) else f"{fam.name}-{i + 1}"
        families[name] = dataclasses.replace(fam, name=name)
    return dataclasses.replace(results, families=families)


def smallest_printed_text(results: StudyResults) -> dict[str, tuple[float, str]]:
    """Figure key -> (smallest text size at the printed size in pt, that text)."""
    found = {}
    with mpl.rc_context(FIGURE_STYLE):  # type: ignore[arg-type]
        for key, _, _, build in FIGURES:
            fig = build(results)
            if fig is None:
                continue
            fig.draw_without_rendering()  # creates the automatic ticks and legends
            width = fig.get_size_inches()[0]
            scale = min(1.0, MAX_WIDTH_IN / width)
            texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
            assert texts, key
            smallest = min(texts, key=lambda t: t.get_fontsize())
            found[key] = (smallest.get_fontsize() * scale, smallest.get_text())
    return found


def _check(results: StudyResults, n: int) -> None:
    sized = smallest_printed_text(with_families(results, n))
    assert {"fig_s_bars", "fig_deltas", "fig_scale_usage"} <= set(sized)
    small = {k: v for k, v in sized.items() if v[0] < MIN_TEXT_PT}
    assert not small, f"{n} families: text below {MIN_TEXT_PT} pt: {small}"


@pytest.mark.parametrize("n", [1, 4, 12])
def test_reference_figures_keep_8pt_text(reference_results: StudyResults, n: int) -> None:
    _check(reference_results, n)


@pytest.mark.parametrize("n", [1, 4, 12])
def test_demo_figures_keep_8pt_text(demo_results: StudyResults, n: int) -> None:
    _check(demo_results, n)


def test_the_check_can_fail(demo_results: StudyResults) -> None:
    with mpl.rc_context({**FIGURE_STYLE, "font.size": 6.0}):
        fig = FIGURES[0][3](demo_results)
    assert fig is not None
    fig.draw_without_rendering()
    assert min(t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()) < MIN_TEXT_PT
