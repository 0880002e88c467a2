"""``pcollapse trajectory``: S, R and the rating distribution along training checkpoints."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona_collapse.cli._app import SeedOpt, app, print_json, stdout_console
from persona_collapse.core.errors import InputFileError, UserError
from persona_collapse.core.formatting import fmt_pm

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from persona_collapse.core.instrument import Instrument
    from persona_collapse.stats.sources import LoadedRun
    from persona_collapse.stats.trajectory import Trajectory

_STEP_SPEC = re.compile(r"^\s*(\d+)\s*=(.+)$")
_FORMATS = ("table", "json", "csv")


def parse_step(spec: str) -> tuple[int, Path, str | None]:
    """``STEP=FILE_OR_STORE[:RUN]`` -> (step, path, run name or None).

    A path that exists is taken whole (it may contain ':'); otherwise the text after
    the last ':' names a run of the store before it.

    Raises:
        UserError: not of the form ``STEP=PATH`` with a non-negative integer step.
    """
    match = _STEP_SPEC.match(spec)
    if match is None:
        raise UserError(
            f"--step {spec!r}: expected STEP=FILE_OR_STORE[:RUN] with a non-negative "
            "integer STEP, e.g. --step 200=run-step0200.csv"
        )
    step, target = int(match.group(1)), match.group(2).strip()
    path = Path(target)
    if path.exists() or ":" not in target:
        return step, path, None
    store, _, run = target.rpartition(":")
    if not run or not store:
        raise UserError(f"--step {spec!r}: empty run name or store path around ':'")
    return step, Path(store), run


def _load_step(step: int, path: Path, run: str | None, instrument: Instrument | None) -> LoadedRun:
    from persona_collapse.stats.sources import is_run_store, load_runs

    if not path.exists():
        raise InputFileError(path, f"no such file or directory (--step {step})")
    if run is not None and not (path.is_file() and is_run_store(path)):
        raise UserError(f"--step {step}: {path} is not a run store, so ':{run}' names no run")
    runs = load_runs(
        [path], run_names=[run] if run else None, kind="persona", instrument=instrument
    )
    if len(runs) != 1:
        names = ", ".join(r.name for r in runs[:5])
        raise UserError(
            f"--step {step}: {path} holds {len(runs)} persona runs ({names}...); "
            "name one file, or one run of a store as STORE:RUN"
        )
    return runs[0]


def load_steps(specs: list[str], instrument: Instrument | None = None) -> dict[int, LoadedRun]:
    """The runs of ``--step`` options, keyed by step (parsed first, then loaded).

    Raises:
        UserError: a malformed spec, a step given twice, a path with several runs.
        InputFileError: a missing or malformed file.
    """
    parsed = [parse_step(s) for s in specs]
    seen: dict[int, str] = {}
    for (step, _, _), spec in zip(parsed, specs, strict=True):
        if step in seen:
            raise UserError(f"step {step} is given twice (--step {seen[step]!r} and {spec!r})")
        seen[step] = spec
    for step, path, _ in parsed:
        if not path.exists():
            raise InputFileError(path, f"no such file or directory (--step {step})")
    return {step: _load_step(step, path, run, instrument) for step, path, run in parsed}


_TABLE_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("S", "S", 3),
    ("R", "R", 3),
    ("sigma_bar", "σ̄", 3),
    ("entropy_bits", "H (bits)", 3),
    ("top1_share", "top-1", 3),
    ("endpoint_mass", "endpoint mass", 3),
)


def _print_table(traj: Trajectory) -> None:
    console = stdout_console()
    table = Table(
        title=(
            f"Trajectory on the {len(traj.common)} personas complete at every step "
            f"(± SE; {traj.n_persona_boot} persona + {traj.n_rerun_boot} rerun draws, "
            f"seed {traj.seed})"
        ),
        title_justify="left",
    )
    for col in ("step", "fraction", "complete", *(h for _, h, _ in _TABLE_FIELDS), "top rating"):
        table.add_column(col, justify="right")
    for p in traj.points:
        cells = [
            fmt_pm(p.metrics.estimate(n).value, p.metrics.estimate(n).se, d)
            if n in p.metrics.estimates
            else "—"
            for n, _, d in _TABLE_FIELDS
        ]
        top = p.metrics.estimates.get("top1_rating")
        table.add_row(
            str(p.step),
            "—" if p.fraction_of_training is None else f"{p.fraction_of_training:.4f}",
            str(traj.common.complete[p.step]),
            *cells,
            "—" if top is None else f"{top.value:g}",
        )
    console.print(table)
    ends = Table(
        title="Endpoints: stand-alone (every persona complete in the run) against common set",
        title_justify="left",
    )
    for col in ("step", "personas", "S", "ΔS", "R", "ΔR", "H (bits)", "ΔH"):
        ends.add_column(col, justify="right")
    for e in traj.endpoints:
        row = [str(e.step), f"{e.standalone.personas} → {e.common.personas}"]
        for name in ("S", "R", "entropy_bits"):
            est = e.standalone.estimate(name)
            row += [fmt_pm(est.value, est.se, 3), f"{e.shift(name):+.3f}"]
        ends.add_row(*row)
    console.print(ends)
    nm = traj.non_monotone
    if nm is not None:
        if nm.detected:
            console.print(nm.statement(), markup=False)
        else:
            level = round(100 * nm.confidence)
            console.print(
                f"No significant rise then fall of S: maximum {nm.peak:.3f} at step "
                f"{nm.peak_step}; drop to the final step {nm.drop.value:+.3f} "
                f"({level} % CI {nm.drop.low:.3f} to {nm.drop.high:.3f})",
                markup=False,
            )


@app.command(rich_help_panel="Analyse")
def trajectory(
    step: Annotated[
        list[str],
        typer.Option(
            "--step",
            help="STEP=FILE_OR_STORE[:RUN]: the run at a training step (repeat for every "
            "step; 0 = the base, the largest = the published variant).",
        ),
    ],
    final_step: Annotated[
        int | None,
        typer.Option(help="Step of the published variant (default: the largest step).", min=1),
    ] = None,
    min_personas: Annotated[
        int, typer.Option(help="Fewest personas complete at every step.", min=2)
    ] = 30,
    persona_boot: Annotated[int, typer.Option(help="Persona-bootstrap draws.", min=2)] = 2000,
    rerun_boot: Annotated[int, typer.Option(help="Rerun-bootstrap draws.", min=1)] = 400,
    seed: SeedOpt = 0,
    confidence: Annotated[
        float, typer.Option(help="Level of the rise and drop intervals of S.")
    ] = 0.95,
    figure: Annotated[
        Path | None,
        typer.Option(help="Write R, S and entropy against step to this PNG, PDF or SVG file."),
    ] = None,
    fraction: Annotated[
        bool, typer.Option("--fraction", help="Figure x axis: fraction of training.")
    ] = False,
    label: Annotated[
        str | None, typer.Option(help="Name of the run in the figure (default: final step's).")
    ] = None,
    instrument: Annotated[
        str | None, typer.Option(help="Instrument of CSV files: mfq30, bfi44 or a YAML file.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Output: 'table', 'json' or 'csv'.")
    ] = "table",
) -> None:
    """S, R, σ̄, entropy, top-1 share and endpoint mass per training step, on the personas
    complete at every step; endpoints checked; non-monotone S reported."""
    from persona_collapse.stats.sources import instrument_option
    from persona_collapse.stats.trajectory import analyze_trajectory

    if fmt not in _FORMATS:
        raise UserError(f"--format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    if not 0 < confidence < 1:
        raise UserError(f"--confidence must lie strictly between 0 and 1, got {confidence}")
    if figure is not None:
        from persona_collapse.report.trajectory import FIGURE_SUFFIXES

        if figure.suffix.lower() not in FIGURE_SUFFIXES:
            raise UserError(
                f"--figure {figure}: the file name must end in {', '.join(sorted(FIGURE_SUFFIXES))}"
            )
    runs = load_steps(step, instrument_option(instrument))
    if figure is not None and any(
        Path(r.source.split("#")[0]).resolve() == figure.resolve() for r in runs.values()
    ):
        raise UserError(f"--figure {figure} is one of the input files; not replacing it")
    if final_step is not None and final_step < max(runs):
        raise UserError(f"--final-step {final_step} is before the last step given ({max(runs)})")
    traj = analyze_trajectory(
        runs,
        final_step=final_step,
        min_personas=min_personas,
        n_persona_boot=persona_boot,
        n_rerun_boot=rerun_boot,
        seed=seed,
        confidence=confidence,
    )
    if figure is not None:
        from persona_collapse.report.trajectory import write_trajectory_figure

        name = label if label is not None else traj.points[-1].name
        write_trajectory_figure({name: traj}, figure, x="fraction" if fraction else "step")
    if fmt == "json":
        print_json(traj.to_records())
    elif fmt == "csv":
        from persona_collapse.core.csvio import records_csv_text

        sys.stdout.write(records_csv_text(traj.to_records()))
    else:
        _print_table(traj)
