"""Study commands: run, status and report a multi-variant study; reproduce the paper."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona_collapse.cli._app import (
    AllowOutsideOpt,
    ForceOpt,
    FormatOpt,
    HelpOpt,
    PersonaBootOpt,
    PreflightOpt,
    RerunBootOpt,
    SeedOpt,
    app,
    backend_failure,
    check_format,
    fmt_pct,
    fmt_pm,
    interruptible,
    print_json,
    stdout_console,
)
from persona_collapse.core.errors import BackendError

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from persona_collapse.engine.costs import RunEstimate
    from persona_collapse.report.model import StudyResults, Verdict
    from persona_collapse.study import StudyOutcome
    from persona_collapse.study.orchestrate import PlannedRun

study_app = typer.Typer(
    help="Run, follow and report a study: model families x variants under one protocol.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study", rich_help_panel="Studies")


@study_app.callback(add_help_option=False)
def _study_app_group(show_help: HelpOpt = False) -> None:
    pass


StudyFile = Annotated[Path, typer.Argument(help="Study file (YAML).")]
FiguresOpt = Annotated[
    bool, typer.Option("--figures/--no-figures", help="Draw figures (needs matplotlib).")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


@contextmanager
def backend_failures() -> Iterator[None]:
    """A failing backend ends the command with one line: exit status 1 when the same
    command may resume (transient), 2 when a cause must be fixed first."""
    try:
        yield
    except BackendError as exc:
        raise typer.Exit(backend_failure(exc)) from None


def headline_table(results: StudyResults) -> Table:
    """Per family: base and treatment S, band, ΔS, ΔR, Δσ̄ and the misalignment-specific ΔR."""
    from persona_collapse.report.model import study_verdict

    verdicts = [study_verdict(results, fam) for fam in results.families.values()]
    corrected = any(v.base_S_paper is not None or v.treatment_S_paper is not None for v in verdicts)
    # The band verdict uses the bias-corrected S where there is one, the changes are the
    # paper's: say which is which, so the columns are not read as one estimator.
    caption = (
        "S base, S treatment and the S band: bias-corrected estimates (± jackknife SE); "
        "ΔS, ΔR, Δσ̄ and excess ΔR: the paper's estimates (the lines below give both)."
        if corrected
        else None
    )
    table = Table(
        title=f"Headline: {results.name}",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    s_label = " (corr.)" if corrected else ""
    columns = (
        "family", "treatment", f"S base{s_label}", f"S treatment{s_label}", "S band",
        "ΔS", "ΔR", "Δσ̄", "excess ΔR", "specific",
    )  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("family", "treatment") else "right")
    for fam, v in zip(results.families.values(), verdicts, strict=True):
        band = "—" if v.side is None else ("in" if v.side == "inside" else v.side)
        table.add_row(
            fam.name,
            v.treatment or "—",
            "—" if v.base_S is None else fmt_pm(v.base_S, v.base_S_se),
            "—" if v.treatment_S is None else fmt_pm(v.treatment_S, v.treatment_S_se),
            band,
            "—" if v.dS is None else fmt_pct(v.dS),
            "—" if v.dR is None else fmt_pct(v.dR),
            "—" if v.dsigma_bar is None else fmt_pct(v.dsigma_bar),
            "—" if v.excess_R is None else fmt_pct(v.excess_R),
            _specific(v),
        )
    avg = results.average
    if avg is not None and "treatment" in avg.variants and avg.families > 1:
        o = avg.variants["treatment"].overall
        table.add_row(
            f"mean ({avg.families})",
            "",
            "",
            "",
            "",
            fmt_pct(o.S),
            fmt_pct(o.R),
            fmt_pct(o.sigma_bar),
            "—" if avg.excess is None else fmt_pct(avg.excess.overall.R),
            "",
        )
    return table


def _specific(v: Verdict) -> str:
    """Signed misalignment-specific share of ΔR; "none" only when its CI covers 0."""
    if v.specific_share is None:
        return "—"
    return "none" if v.share_is_none else fmt_pct(v.specific_share)


def print_outcome(outcome: StudyOutcome) -> None:
    """Print the headline table and where the report is."""
    from persona_collapse.report.model import significance_verdict

    console = stdout_console()
    results = outcome.results
    console.print(headline_table(results))
    for fam in results.families.values():
        tested = significance_verdict(results, fam)
        if tested is not None:
            console.print(f"{fam.name}: {tested}", markup=False, highlight=False)
    notes = [n for v in results.variants() for n in v.notes]
    notes += list(results.notes)
    for note in notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    collection = outcome.collection
    if collection is not None:
        if collection.produced:
            trained = ", ".join(collection.trained) or "none (all reused)"
            console.print(f"fine-tuned this session: {trained}", markup=False, highlight=False)
        if collection.verified:
            console.print(f"answers verified this session: {collection.verified_answers:,}")
        console.print(f"model requests this session: {collection.requests:,}")
    console.print(f"outputs are in {outcome.output_dir}", markup=False, highlight=False)
    console.print(f"report: {outcome.files.html.resolve()}", markup=False, highlight=False)


def print_study_estimate(rows: list[tuple[PlannedRun, RunEstimate]], out_format: str) -> None:
    """``study run --dry-run``: one line per run still to collect, per variant and total."""
    total_cost = [e.cost_usd for _, e in rows]
    cost = None if any(c is None for c in total_cost) else sum(c or 0.0 for c in total_cost)
    totals = {
        "requests": sum(e.requests for _, e in rows),
        "prompt_tokens": sum(e.prompt_tokens for _, e in rows),
        "completion_tokens": sum(e.completion_tokens for _, e in rows),
        "cost_usd": cost,
    }
    if out_format == "json":
        print_json(
            {
                "runs": [{"family": r.family, "variant": r.label, **e.to_dict()} for r, e in rows],
                **totals,
            }
        )
        return
    table = Table(title="Dry run: what the study still has to collect", title_justify="left")
    for col in ("variant", "run", "to collect", "requests", "prompt tok", "output tok", "cost"):
        table.add_column(col, justify="left" if col in ("variant", "run") else "right")
    by_variant: dict[str, list[RunEstimate]] = {}
    for run, e in rows:
        by_variant.setdefault(f"{run.family}/{run.label}", []).append(e)
        table.add_row(
            f"{run.family}/{run.label}",
            run.kind,
            f"{e.missing:,} of {e.units:,}",
            f"{e.requests:,}",
            f"{e.prompt_tokens:,}",
            f"{e.completion_tokens:,}",
            "—" if e.cost_usd is None else f"${e.cost_usd:,.2f}",
        )
    console = stdout_console()
    console.print(table)
    for variant, estimates in by_variant.items():
        costs = [e.cost_usd for e in estimates]
        usd = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
        console.print(
            f"{variant}: {sum(e.requests for e in estimates):,} requests"
            + ("" if usd is None else f", ~${usd:,.2f}"),
            markup=False,
            highlight=False,
        )
    console.print(
        f"total: {totals['requests']:,} requests, ~{totals['prompt_tokens']:,} prompt and "
        f"{totals['completion_tokens']:,} output tokens"
        + ("" if cost is None else f", ~${cost:,.2f}")
        + ". Re-asks of unparseable replies and retries come on top (with --preflight, "
        "expected re-asks are included); fine-tuning and verification are not counted.",
        markup=False,
        highlight=False,
    )


@study_app.command("run")
def run_cmd(
    study_file: StudyFile,
    progress: ProgressOpt = True,
    figures: FiguresOpt = True,
    preflight: PreflightOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the requests, tokens and cost per variant and in total; send nothing.",
        ),
    ] = False,
    fmt: FormatOpt = "table",
    force: ForceOpt = False,
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """Collect every run the study needs (resuming), then write metrics, tables, figures, report."""
    from persona_collapse.study import load_study, run_study
    from persona_collapse.study.controls import estimate_study

    out_format = check_format(fmt)
    study = load_study(study_file, allow_outside=allow_outside)
    if dry_run:
        from persona_collapse.study.sensitivity import estimate_sensitivity

        rows = estimate_study(study, preflight=bool(preflight)) + estimate_sensitivity(study)
        print_study_estimate(rows, out_format)
        return
    with interruptible(), backend_failures():
        outcome = run_study(
            study,
            progress=progress,
            figures=figures,
            preflight=preflight is not False,
            force=force,
        )
    print_outcome(outcome)


@study_app.command("status")
def status_cmd(
    study_file: StudyFile, fmt: FormatOpt = "table", allow_outside: AllowOutsideOpt = False
) -> None:
    """Per-variant progress of a study, read from its run store (no model call)."""
    from persona_collapse.study import load_study
    from persona_collapse.study.controls import study_status
    from persona_collapse.study.orchestrate import preparation_status

    out_format = check_format(fmt)
    study = load_study(study_file, allow_outside=allow_outside)
    from persona_collapse.study.sensitivity import sensitivity_status

    rows = study_status(study) + sensitivity_status(study)
    steps = preparation_status(study)
    if out_format == "json":
        print_json(
            [
                {
                    "family": r.run.family,
                    "variant": r.run.label,
                    "kind": r.run.kind,
                    "run": r.run.name,
                    "stored": r.stored,
                    "planned": r.run.planned,
                    "failed": r.failed,
                    "status": r.status,
                    "complete": r.complete,
                }
                for r in rows
            ]
            + [
                {"family": s.family, "variant": s.label, "step": s.step, "state": s.state}
                for s in steps
            ]
        )
        return
    if steps:
        prep = Table(title="Fine-tuning and verification", title_justify="left")
        for col in ("family", "variant", "step", "state"):
            prep.add_column(col)
        for step in steps:
            prep.add_row(step.family, step.label, step.step, step.state)
        stdout_console().print(prep)
    table = Table(title=f"{study.config.name}: {study.config.store_path}", title_justify="left")
    for col in ("family", "variant", "kind", "stored", "failed", "status"):
        table.add_column(col, justify="right" if col in ("stored", "failed") else "left")
    for r in rows:
        planned = "" if r.run.planned is None else f" / {r.run.planned:,}"
        table.add_row(
            r.run.family,
            r.run.label,
            r.run.kind,
            f"{r.stored:,}{planned}",
            f"{r.failed:,}",
            "complete" if r.complete else r.status,
        )
    stdout_console().print(table)
    done = sum(r.complete for r in rows)
    stdout_console().print(f"{done} of {len(rows)} runs complete")


@study_app.command("report")
def report_cmd(
    study_file: StudyFile,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (default: the study's).")
    ] = None,
    figures: FiguresOpt = True,
    force: ForceOpt = False,
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """Re-render the outputs from the run store alone (no model call)."""
    from persona_collapse.study import load_study, report_study

    study = load_study(study_file, allow_outside=allow_outside)
    print_outcome(report_study(study, output_dir=output, figures=figures, force=force))


@app.command(name="reproduce", rich_help_panel="Studies")
def reproduce_cmd(
    path: Annotated[
        Path, typer.Argument(help="Folder laid out like the paper's data (base/, secure-code/...).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path(
        "pcollapse-reproduce"
    ),
    persona_boot: PersonaBootOpt = 2000,
    rerun_boot: RerunBootOpt = 400,
    seed: SeedOpt = 0,
    figures: FiguresOpt = True,
    force: ForceOpt = False,
) -> None:
    """Import the paper's public data (or data laid out like it) and render the same report."""
    from persona_collapse.core.config import AnalysisConfig
    from persona_collapse.study import reproduce

    analysis = AnalysisConfig(n_persona_boot=persona_boot, n_rerun_boot=rerun_boot, seed=seed)
    with interruptible():
        outcome = reproduce(path, output, analysis=analysis, figures=figures, force=force)
    print_outcome(outcome)


__all__ = ["backend_failures", "headline_table", "print_outcome", "study_app"]
