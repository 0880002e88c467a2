"""The ``pcollapse`` command line: a thin wrapper over the public API.

User-fixable errors print one line (``error: ...``) and exit with status 2;
Ctrl-C exits with status 130 and keeps everything already collected.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from persona_collapse._version import __version__
from persona_collapse.backends import available_backends
from persona_collapse.compare import FamilyComparison, check_band, compare_labeled
from persona_collapse.config import AnalysisConfig, RunConfig
from persona_collapse.errors import UserError
from persona_collapse.metrics import RunMetrics, SelfProfile
from persona_collapse.sources import load_runs, metrics_by_name, run_self_profile
from persona_collapse.store.sqlite import RunStore
from persona_collapse.study import execute_run, run_demo

app = typer.Typer(
    name="pcollapse",
    help="Measure persona-model collapse: moral susceptibility (S) and robustness (R).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OutputFormat = Literal["table", "json"]
Paths = Annotated[
    list[Path],
    typer.Argument(help="Reference-layout CSV files, folders of them, or run stores (.db)."),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Output: 'table' or 'json'.")]
RunOpt = Annotated[
    list[str] | None, typer.Option("--run", help="Only these runs of a store (repeatable).")
]
PersonaBootOpt = Annotated[int, typer.Option(help="Persona-bootstrap draws.", min=1)]
RerunBootOpt = Annotated[int, typer.Option(help="Rerun-bootstrap draws.", min=1)]
SeedOpt = Annotated[int, typer.Option(help="Seed of the bootstrap draws.", min=0)]


@contextmanager
def _interruptible() -> Iterator[None]:
    """Turn Ctrl-C into a short message and exit status 130 (collected answers are kept)."""
    try:
        yield
    except KeyboardInterrupt:
        Console(stderr=True).print(
            "interrupted: everything collected so far is stored; run the same command to resume"
        )
        raise typer.Exit(130) from None


def _out() -> Console:
    # Piped output gets a wide console so tables are not folded into unreadable cells.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _check_format(fmt: str) -> OutputFormat:
    if fmt not in ("table", "json"):
        raise UserError(f"--format must be 'table' or 'json', got {fmt!r}")
    return "table" if fmt == "table" else "json"


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_finite(data), indent=2, ensure_ascii=False) + "\n")


def _pm(value: float, se: float | None = None, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    text = f"{value:.{digits}f}"
    return text if se is None or not math.isfinite(se) else f"{text} ± {se:.{digits}f}"


def _pct(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:+.1f} %"


def _metrics_table(
    rows: Mapping[str, RunMetrics], *, per_foundation: bool, band: tuple[float, float]
) -> Table:
    table = Table(title="Moral susceptibility and robustness", title_justify="left")
    for col in ("run", "S", "R", "σ̄", "personas", "items", "S band"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, m in rows.items():
        band_check = check_band(m.S, band)
        table.add_row(
            name,
            _pm(m.S, m.S_se),
            _pm(m.R, m.R_se, 2),
            _pm(m.sigma_bar, m.sigma_bar_se),
            str(m.personas),
            str(m.questions),
            "in" if band_check.inside else ("above" if band_check.high < m.S else "below"),
        )
        if per_foundation:
            for foundation, fm in m.per_foundation.items():
                table.add_row(
                    f"  {foundation}",
                    _pm(fm.S, fm.S_se),
                    _pm(fm.R, fm.R_se, 2),
                    _pm(fm.sigma_bar, fm.sigma_bar_se),
                    "",
                    "",
                    "",
                )
    return table


def _metrics_json(name: str, source: str, m: RunMetrics, *, per_foundation: bool) -> dict[str, Any]:
    data = {"name": name, "source": source, **m.to_dict()}
    if not per_foundation:
        data.pop("per_foundation", None)
    return data


def _comparison_table(cmp: FamilyComparison, base: str) -> Table:
    table = Table(title=f"Relative change against {base!r}", title_justify="left")
    for col in ("variant", "ΔS", "ΔR", "Δσ̄"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for label, change in cmp.variants.items():
        o = change.overall
        table.add_row(label, _pct(o.S), _pct(o.R), _pct(o.sigma_bar))
    if cmp.excess is not None:
        o = cmp.excess.overall
        table.add_row(
            f"excess ({cmp.treatment} − {cmp.control})", _pct(o.S), _pct(o.R), _pct(o.sigma_bar)
        )
    return table


def _profile_table(profiles: Mapping[str, SelfProfile]) -> Table:
    table = Table(title="Self-profiles (mean ± sd per foundation)", title_justify="left")
    foundations: list[str] = []
    for p in profiles.values():
        foundations.extend(f for f in p.mean if f not in foundations)
    table.add_column("run")
    for f in foundations:
        table.add_column(f, justify="right")
    for name, p in profiles.items():
        table.add_row(
            name,
            *(_pm(p.mean[f], p.sd[f], 2) if f in p.mean else "—" for f in foundations),
        )
    return table


@app.command()
def metrics(
    paths: Paths,
    run: RunOpt = None,
    fmt: FormatOpt = "table",
    per_foundation: Annotated[
        bool, typer.Option("--per-foundation", help="Also report each foundation.")
    ] = False,
    persona_boot: PersonaBootOpt = 2000,
    rerun_boot: RerunBootOpt = 400,
    seed: SeedOpt = 0,
) -> None:
    """Compute S, R and σ̄ (with bootstrap standard errors) of persona runs."""
    out_format = _check_format(fmt)
    analysis = AnalysisConfig(n_persona_boot=persona_boot, n_rerun_boot=rerun_boot, seed=seed)
    runs = load_runs(paths, run_names=run, kind="persona")
    results = metrics_by_name(runs, analysis)
    if out_format == "json":
        sources = {r.name: r.source for r in runs}
        _print_json(
            [
                _metrics_json(n, sources[n], m, per_foundation=per_foundation)
                for n, m in results.items()
            ]
        )
    else:
        _out().print(_metrics_table(results, per_foundation=per_foundation, band=analysis.s_band))


@app.command()
def compare(
    paths: Paths,
    base: Annotated[str, typer.Option(help="Name of the base run.")],
    control: Annotated[str | None, typer.Option(help="Name of the control run.")] = None,
    treatment: Annotated[str | None, typer.Option(help="Name of the treatment run.")] = None,
    run: RunOpt = None,
    fmt: FormatOpt = "table",
    persona_boot: PersonaBootOpt = 2000,
    rerun_boot: RerunBootOpt = 400,
    seed: SeedOpt = 0,
) -> None:
    """Compare variants of one model family with its base: ΔS, ΔR, Δσ̄ and the excess."""
    out_format = _check_format(fmt)
    analysis = AnalysisConfig(n_persona_boot=persona_boot, n_rerun_boot=rerun_boot, seed=seed)
    results = metrics_by_name(load_runs(paths, run_names=run, kind="persona"), analysis)
    for label in (base, control, treatment):
        if label is not None and label not in results:
            from persona_collapse.errors import UnknownNameError

            raise UnknownNameError("run", label, results)
    if len(results) < 2:
        raise UserError("compare needs the base run and at least one other run")
    cmp = compare_labeled(results, base=base, control=control, treatment=treatment)
    if out_format == "json":
        _print_json(
            {
                "base": base,
                "metrics": {n: m.to_dict() for n, m in results.items()},
                "band": {n: check_band(m.S, analysis.s_band).to_dict() for n, m in results.items()},
                **cmp.to_dict(),
            }
        )
    else:
        console = _out()
        console.print(_metrics_table(results, per_foundation=False, band=analysis.s_band))
        console.print(_comparison_table(cmp, base))


@app.command()
def profile(paths: Paths, run: RunOpt = None, fmt: FormatOpt = "table") -> None:
    """Self-profiles: per-foundation mean and sd of the model's own answers."""
    out_format = _check_format(fmt)
    runs = load_runs(paths, run_names=run, kind="self")
    profiles = {r.name: run_self_profile(r) for r in runs}
    if out_format == "json":
        _print_json([{"name": n, **p.to_dict()} for n, p in profiles.items()])
    else:
        _out().print(_profile_table(profiles))


@app.command(name="import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="Reference-layout CSV files or folders.")],
    store: Annotated[Path, typer.Option(help="Run store to import into (created if new).")],
    name: Annotated[
        str | None, typer.Option(help="Run name (one file only); default: the file name.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model label; default: the run name.")] = None,
    temperature: Annotated[float, typer.Option(help="Collection temperature.")] = 0.1,
) -> None:
    """Import reference-layout CSV files (persona or self runs) into a run store."""
    from persona_collapse.store.reference_csv import iter_csv_files

    csv_files = iter_csv_files(files)
    if name is not None and len(csv_files) != 1:
        raise UserError(f"--name needs exactly one CSV file, got {len(csv_files)}")
    console = _out()
    with RunStore.open(store) as st:
        for path in csv_files:
            record = st.import_csv(
                path, name=name or path.stem, model=model, temperature=temperature
            )
            counts = st.counts(record.run_id)
            console.print(f"imported {path} as {record.name!r} ({counts.slots} slots)")


@app.command()
def export(
    store: Annotated[Path, typer.Argument(help="Run store.")],
    run: Annotated[str, typer.Option(help="Run name or id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="'csv' or 'parquet'.")] = "csv",
) -> None:
    """Export a run's ratings as CSV (reference layout) or Parquet."""
    if fmt not in ("csv", "parquet"):
        raise UserError(f"--format must be 'csv' or 'parquet', got {fmt!r}")
    if not store.is_file():
        from persona_collapse.errors import InputFileError

        raise InputFileError(store, "run store not found")
    with RunStore.open(store, create=False) as st:
        record = st.find_run(run)
        path = st.export(record.run_id, output, format="csv" if fmt == "csv" else "parquet")
    _out().print(f"wrote {path}")


@app.command()
def runs(store: Annotated[Path, typer.Argument(help="Run store.")]) -> None:
    """List the runs of a store with their progress."""
    if not store.is_file():
        from persona_collapse.errors import InputFileError

        raise InputFileError(store, "run store not found")
    table = Table(title=str(store), title_justify="left")
    columns = (
        "id",
        "name",
        "kind",
        "model",
        "T",
        "mode",
        "n",
        "slots",
        "failed",
        "cells",
        "status",
    )
    for col in columns:
        table.add_column(col)
    with RunStore.open(store, create=False) as st:
        for rec in st.list_runs():
            c = st.counts(rec.run_id)
            table.add_row(
                str(rec.run_id),
                rec.name,
                rec.kind,
                rec.model,
                f"{rec.temperature:g}",
                rec.mode,
                str(rec.n_repetitions),
                str(c.slots),
                str(c.failed),
                str(c.distributions),
                rec.status,
            )
    _out().print(table)


@app.command()
def backends() -> None:
    """List the available backends."""
    for name in available_backends():
        _out().print(name)


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run configuration (YAML).")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="Backend name.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Model label; for the simulator, its preset.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Backend option KEY=VALUE (repeatable)."),
    ] = None,
    personas: Annotated[str | None, typer.Option(help="Persona set name or file.")] = None,
    max_personas: Annotated[int | None, typer.Option(help="Use only the first N personas.")] = None,
    instrument: Annotated[str | None, typer.Option(help="Instrument name or YAML file.")] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template YAML file.")] = None,
    repetitions: Annotated[int | None, typer.Option(help="Repetitions per cell.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    mode: Annotated[str | None, typer.Option(help="'sampling' or 'exact'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    store: Annotated[Path | None, typer.Option(help="Run store (SQLite file).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name.")] = None,
    self_run: Annotated[
        bool | None, typer.Option("--self/--no-self", help="Also collect the self run.")
    ] = None,
    persona_run: Annotated[
        bool | None, typer.Option("--persona/--no-persona", help="Collect the persona run.")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Show a progress bar.")
    ] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Collect persona and self runs (resuming a stored run), then print their metrics."""
    out_format = _check_format(fmt)
    overrides: dict[str, Any] = {
        "backend": backend,
        "model": model,
        "personas": personas,
        "max_personas": max_personas,
        "instrument": instrument,
        "template": template,
        "repetitions": repetitions,
        "temperature": temperature,
        "mode": mode,
        "seed": seed,
        "max_concurrency": concurrency,
        "store": store,
        "name": name,
        "self_run": self_run,
        "persona_run": persona_run,
        "progress": progress,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if option:
        overrides["backend_options"] = _parse_options(option)
    if config is not None:
        cfg = RunConfig.from_yaml(config, **overrides)
    else:
        cfg = RunConfig.from_mapping(overrides, source="command line")
    with _interruptible():
        outcome = execute_run(cfg)
    if out_format == "json":
        _print_json(
            {
                "store": str(cfg.store),
                "metrics": None if outcome.metrics is None else outcome.metrics.to_dict(),
                "self_profile": None
                if outcome.self_profile is None
                else outcome.self_profile.to_dict(),
                "collected": {k: v.collected for k, v in outcome.collection.items()},
            }
        )
        return
    console = _out()
    if outcome.metrics is not None and outcome.persona_run is not None:
        console.print(
            _metrics_table(
                {outcome.persona_run.name: outcome.metrics},
                per_foundation=True,
                band=cfg.analysis.s_band,
            )
        )
    if outcome.self_profile is not None and outcome.self_run is not None:
        console.print(_profile_table({outcome.self_run.name: outcome.self_profile}))
    console.print(f"answers are in {cfg.store}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Output folder.")] = Path("pcollapse-demo"),
    max_personas: Annotated[
        int | None, typer.Option(help="Use only the first N built-in personas.")
    ] = None,
    repetitions: Annotated[int, typer.Option(help="Repetitions per cell.", min=1)] = 10,
    seed: SeedOpt = 0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
) -> None:
    """Run the simulator's base, secure and insecure presets and compare them (no network)."""
    with _interruptible():
        result = run_demo(
            output,
            max_personas=max_personas,
            repetitions=repetitions,
            seed=seed,
            progress=progress,
        )
    console = _out()
    rows = {f"sim-{k}": o.metrics for k, o in result.outcomes.items() if o.metrics is not None}
    console.print(_metrics_table(rows, per_foundation=False, band=AnalysisConfig().s_band))
    console.print(_comparison_table(result.comparison, "base"))
    profiles = {
        f"sim-{k}/self": o.self_profile
        for k, o in result.outcomes.items()
        if o.self_profile is not None
    }
    console.print(_profile_table(profiles))
    console.print(f"answers are in {result.store}")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if version:
        _out().print(f"pcollapse {__version__}")
        raise typer.Exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    command = typer.main.get_command(app)
    try:
        command(args=list(argv) if argv is not None else None, prog_name="pcollapse")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UserError as exc:
        Console(stderr=True, soft_wrap=True, highlight=False).print(f"error: {exc}", markup=False)
        return exc.exit_code
    return 0


def entry_point() -> None:
    """The ``pcollapse`` console script."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry_point()
