"""Study reports: tables (CSV, JSON, LaTeX), figures (PDF, PNG) and one self-contained HTML page.

:func:`write_report` writes everything for a
:class:`~persona_collapse.report.model.StudyResults` into an output folder.
Figures need matplotlib (``pip install 'persona-collapse[report]'``); without
it the tables and the HTML report are still written, and the report says why
it has no figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from persona_collapse.core.errors import MissingDependencyError
from persona_collapse.core.files import write_text_atomic
from persona_collapse.report.figures import RenderedFigure, render_figures
from persona_collapse.report.html import render_html
from persona_collapse.report.model import (
    DataCounts,
    FamilyResult,
    StudyResults,
    TemperaturePoint,
    VariantDiagnostics,
    VariantResult,
    Verdict,
    family_verdict,
)
from persona_collapse.report.tables import write_tables

logger = logging.getLogger(__name__)

_DESCRIPTIONS = {
    "metrics.csv": "S, R, σ̄ and every other statistic with SEs, overall and per foundation",
    "metrics.json": "all numbers of this report (metrics, profiles, diagnostics, counts)",
    "comparison.csv": "Δ% against the base and the excess, per family and mean by role",
    "profiles.csv": "self-profiles and toxic-control profiles per foundation",
    "diagnostics.csv": "scale usage, ceiling saturation, parse-failure rates, whether S is "
    "ceiling-limited",
    "parse_failures_by_persona.csv": "parse-failure rate of every persona",
    "counts.csv": "personas, answers, failures, requests, tokens, cost",
    "temperature_curves.csv": "S(T) and R(T) from stored distributions",
    "significance.csv": "difference tests against the base and of the excess (Holm-corrected)",
    "verification.csv": "emergent-misalignment verification: alignment, coherence, misaligned "
    "share per variant and question",
    "tables/table_metrics.tex": "LaTeX: S and R with Δ%",
    "tables/table_self_profiles.tex": "LaTeX: self-profiles",
    "tables/table_toxic_profiles.tex": "LaTeX: toxic-control profiles",
    "tables/tables.tex": "LaTeX document typesetting the tables",
}


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote.

    Attributes:
        html: The report page.
        tables: Table file name (relative) -> path.
        figures: Rendered figures (empty without matplotlib).
    """

    html: Path
    tables: dict[str, Path]
    figures: tuple[RenderedFigure, ...]


def write_report(
    results: StudyResults, out_dir: str | Path, *, figures: bool = True
) -> ReportFiles:
    """Write tables, figures and ``report.html`` for ``results`` into ``out_dir``.

    Args:
        results: The study's results.
        out_dir: Output folder (created if needed).
        figures: Draw the figures (needs matplotlib).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = write_tables(results, out)
    rendered: list[RenderedFigure] = []
    missing = None
    if figures:
        try:
            rendered = render_figures(results, out / "figures")
        except MissingDependencyError as exc:
            logger.warning("no figures: %s", exc)
            missing = str(exc)
    else:
        missing = "figures were switched off"
    listed = {name: _DESCRIPTIONS.get(name, "") for name in tables}
    for fig in rendered:
        listed[f"figures/{fig.key}.pdf"] = f"{fig.title} (PDF; PNG beside it)"
    page = render_html(results, rendered, files=listed, figures_missing=missing)
    html_path = write_text_atomic(out / "report.html", page)
    return ReportFiles(html=html_path, tables=tables, figures=tuple(rendered))


__all__ = [
    "DataCounts",
    "FamilyResult",
    "ReportFiles",
    "StudyResults",
    "TemperaturePoint",
    "VariantDiagnostics",
    "VariantResult",
    "Verdict",
    "family_verdict",
    "write_report",
]
