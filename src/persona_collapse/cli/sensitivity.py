"""``pcollapse sensitivity``: does the finding survive other templates, item orders,
persona samples and temperatures?"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona_collapse.cli._app import (
    AllowOutsideOpt,
    PreflightOpt,
    app,
    interruptible,
    print_json,
    stdout_console,
)
from persona_collapse.core.errors import UserError

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from persona_collapse.stats.sensitivity import SensitivityResult

_FORMATS = ("table", "json", "csv")
_FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def _pct(value: float) -> str:
    from persona_collapse.core.formatting import fmt_pct

    return fmt_pct(value)


def print_robustness(result: SensitivityResult) -> None:
    """The robustness table, one verdict line per variant and metric, and the summary."""
    console = stdout_console()
    table = Table(
        title=(
            "Robustness: change against the base under each condition "
            f"({round(100 * result.confidence)} % CI, Holm within condition, "
            f"α = {result.alpha:g})"
        ),
        title_justify="left",
    )
    for col in ("variant", "condition", "metric", "change", "CI", "p (Holm)", "personas", "status"):
        table.add_column(
            col, justify="left" if col in ("variant", "condition", "status") else "right"
        )
    for r in result.rows:
        p = r.p_holm
        table.add_row(
            f"{r.family}/{r.variant}",
            r.condition.label,
            f"Δ{r.metric}",
            _pct(r.estimate),
            f"{_pct(r.ci_low)} to {_pct(r.ci_high)}",
            "< 0.001" if p < 0.001 else f"{p:.3f}",
            str(r.n_personas),
            r.status,
        )
    console.print(table)
    for verdict in result.robustness:
        console.print(verdict.statement(), markup=False, highlight=False)
    for label, why in result.skipped.items():
        console.print(f"not tested: {label} ({why})", markup=False, highlight=False)
    console.print(result.summary(), markup=False, highlight=False)


@app.command(rich_help_panel="Studies")
def sensitivity(
    study_file: Annotated[
        Path, typer.Argument(help="Study file (YAML) with a 'sensitivity' section.")
    ],
    collect: Annotated[
        bool,
        typer.Option(
            "--collect",
            help="Collect what the store lacks first (the study's runs, then the suite's).",
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
    preflight: PreflightOpt = None,
    figure: Annotated[
        Path | None,
        typer.Option(
            help="Write the robustness figure (ΔS, ΔR per condition) to this PNG, PDF or SVG."
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Output: 'table', 'json' or 'csv'.")
    ] = "table",
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """ΔS and ΔR of every variant against its base under each factor level, and whether
    the headline's sign and significance survive every factor."""
    from persona_collapse.study import load_study
    from persona_collapse.study.sensitivity import robustness_csv, run_sensitivity

    if fmt not in _FORMATS:
        raise UserError(f"--format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    if figure is not None and figure.suffix.lower() not in _FIGURE_SUFFIXES:
        raise UserError(
            f"--figure {figure}: the file name must end in {', '.join(_FIGURE_SUFFIXES)}"
        )
    study = load_study(study_file, allow_outside=allow_outside)
    if figure is not None and figure.resolve() == Path(study.source).resolve():
        raise UserError(f"--figure {figure} is the study file; not replacing it")
    with interruptible():
        result = run_sensitivity(
            study, collect=collect, progress=progress, preflight=preflight is not False
        )
    if figure is not None:
        from persona_collapse.report.sensitivity import write_robustness_figure

        write_robustness_figure(result, figure)
    if fmt == "json":
        print_json(result.to_dict())
    elif fmt == "csv":
        sys.stdout.write(robustness_csv(result))
    else:
        print_robustness(result)
