"""Core commands: collect, import and export runs; metrics, comparisons, self-profiles."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from persona_collapse.cli._app import (
    AllowOutsideOpt,
    ForceOpt,
    FormatOpt,
    Paths,
    PersonaBootOpt,
    PreflightOpt,
    RerunBootOpt,
    RunOpt,
    SeedOpt,
    app,
    check_format,
    comparison_table,
    interruptible,
    keep_freed_memory,
    metrics_json,
    metrics_table,
    print_json,
    profile_table,
    single_threaded_blas,
    stdout_console,
)
from persona_collapse.cli._significance import (
    EstimatorOpt,
    VarianceOpt,
    check_estimator,
    significance_table,
)
from persona_collapse.core.errors import InputFileError, UnknownNameError, UserError

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from persona_collapse.backends.base import EndpointBehaviour, ProbeMode
    from persona_collapse.core.config import RunConfig
    from persona_collapse.engine.costs import EndpointSupport
    from persona_collapse.stats.sources import LoadedRun


InstrumentOpt = Annotated[
    str | None,
    typer.Option(
        help="Instrument of CSV files: built-in name (mfq30, bfi44) or YAML file "
        "(default mfq30; run stores record their own)."
    ),
]


def _per_group_key(data: dict[str, Any], noun: str) -> dict[str, Any]:
    """``per_foundation`` renamed after the instrument's groups (``per_domain`` for BFI-44)."""
    if noun == "foundation" or "per_foundation" not in data:
        return data
    return {(f"per_{noun}" if k == "per_foundation" else k): v for k, v in data.items()}


@app.command(rich_help_panel="Analyse")
def metrics(
    paths: Paths,
    run: RunOpt = None,
    fmt: FormatOpt = "table",
    per_foundation: Annotated[
        bool,
        typer.Option(
            "--per-foundation", help="Also report each foundation (each domain for BFI-44)."
        ),
    ] = False,
    persona_boot: PersonaBootOpt = 2000,
    rerun_boot: RerunBootOpt = 400,
    seed: SeedOpt = 0,
    instrument: InstrumentOpt = None,
    require_complete: Annotated[
        bool,
        typer.Option(
            "--require-complete",
            help="Fail (exit 2) when a run misses planned answers or drops a persona.",
        ),
    ] = False,
    task: Annotated[
        str | None,
        typer.Option(help="Capability CSVs: 'mmlu' or 'gsm8k' (default: the file-name suffix)."),
    ] = None,
) -> None:
    """Compute S, R and σ̄ (with bootstrap standard errors) of persona runs.

    Capability and lookup CSVs (recognised by their columns) get the control-task
    metrics instead; the bootstrap options then count item and repetition draws.
    """
    single_threaded_blas()  # before numpy loads
    keep_freed_memory()
    from persona_collapse.cli.controls import control_files, control_metrics

    # Not AnalysisConfig: the configuration models cost a tenth of a second to import.
    from persona_collapse.core.band import DEFAULT_S_BAND
    from persona_collapse.stats.sources import (
        Bootstrap,
        instrument_option,
        load_runs,
        metrics_by_name,
        run_completeness,
    )

    out_format = check_format(fmt)
    controls = control_files(paths)
    if controls is not None:
        control_metrics(
            controls, task=task, out_format=out_format, n_item_boot=persona_boot,
            n_rep_boot=rerun_boot, seed=seed,
        )  # fmt: skip
        return
    analysis = Bootstrap(n_persona_boot=persona_boot, n_rerun_boot=rerun_boot, seed=seed)
    inst = instrument_option(instrument)
    runs = load_runs(paths, run_names=run, kind="persona", instrument=inst)
    results = metrics_by_name(runs, analysis)
    by_name = {r.name: r for r in runs}
    coverage = {n: run_completeness(by_name[n], m) for n, m in results.items()}
    if require_complete:
        incomplete = [f"{n!r}: {c.describe()}" for n, c in coverage.items() if not c.complete]
        if incomplete:
            raise UserError(
                "incomplete run(s) and --require-complete given: " + "; ".join(incomplete)
            )
    checks = {r.name: r.protocol for r in runs}
    if out_format == "json":
        print_json(
            [
                _per_group_key(
                    {
                        **metrics_json(
                            n, by_name[n].source, m, per_foundation=per_foundation, check=checks[n]
                        ),
                        **coverage[n].to_dict(),
                        **_corrected_json(by_name[n], persona_boot, seed, per_foundation),
                    },
                    by_name[n].instrument.group_noun,
                )
                for n, m in results.items()
            ]
        )
    else:
        console = stdout_console()
        console.print(
            metrics_table(
                results,
                per_foundation=per_foundation,
                band=DEFAULT_S_BAND,
                coverage=coverage,
                checks=checks,
                corrected={
                    n: _corrected_json(by_name[n], persona_boot, seed, per_foundation)
                    for n in results
                },
            )
        )
        for n, c in coverage.items():
            if not c.complete:
                console.print(f"incomplete run {n!r}: {c.describe()}")


def _corrected_json(run: LoadedRun, n_boot: int, seed: int, per_foundation: bool) -> dict[str, Any]:
    """A run's bias-corrected estimates as labelled JSON fields (issue 16; empty when
    its cells cannot be formed)."""
    from persona_collapse.stats.significance import corrected_fields, run_cells

    try:
        return corrected_fields(
            run_cells(run), n_boot=n_boot, rng=seed, per_foundation=per_foundation
        )
    except ValueError:
        return {}


@app.command(rich_help_panel="Analyse")
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
    tests: Annotated[
        bool, typer.Option("--tests/--no-tests", help="Difference tests (CIs, p-values, Holm).")
    ] = True,
    estimator: EstimatorOpt = "reference",
    variance: VarianceOpt = "persona",
    per_foundation: Annotated[
        bool, typer.Option("--per-foundation", help="Also test each foundation.")
    ] = False,
    instrument: InstrumentOpt = None,
) -> None:
    """Compare variants of one model family with its base: ΔS, ΔR, Δσ̄ and the excess."""
    from persona_collapse.core.config import AnalysisConfig
    from persona_collapse.stats.compare import check_band, compare_labeled
    from persona_collapse.stats.significance import OVERALL, family_significance, run_cells
    from persona_collapse.stats.sources import instrument_option, load_runs, metrics_by_name

    out_format = check_format(fmt)
    estimator_name, variance_name = check_estimator(estimator, variance)
    analysis = AnalysisConfig(n_persona_boot=persona_boot, n_rerun_boot=rerun_boot, seed=seed)
    loaded = load_runs(
        paths, run_names=run, kind="persona", instrument=instrument_option(instrument)
    )
    results = metrics_by_name(loaded, analysis)
    for label in (base, control, treatment):
        if label is not None and label not in results:
            raise UnknownNameError("run", label, results)
    if len(results) < 2:
        raise UserError("compare needs the base run and at least one other run")
    cmp = compare_labeled(results, base=base, control=control, treatment=treatment)
    significance = None
    if tests:
        try:
            significance = family_significance(
                {r.name: run_cells(r) for r in loaded},
                base=base,
                control=control,
                treatment=treatment,
                estimator=estimator_name,
                variance=variance_name,
                n_boot=max(persona_boot, 2),
                n_rerun_boot=rerun_boot,
                rng=seed,
            )
        except ValueError as exc:
            raise UserError(f"difference tests: {exc}") from None
    if out_format == "json":
        print_json(
            {
                "base": base,
                "metrics": {n: m.to_dict() for n, m in results.items()},
                "band": {n: check_band(m.S, analysis.s_band).to_dict() for n, m in results.items()},
                **cmp.to_dict(),
                "tests": None if significance is None else significance.to_dict(),
                "corrected": {
                    r.name: _corrected_json(r, persona_boot, seed, False) for r in loaded
                },
            }
        )
    else:
        console = stdout_console()
        corrected = {r.name: _corrected_json(r, persona_boot, seed, False) for r in loaded}
        console.print(
            metrics_table(results, per_foundation=False, band=analysis.s_band, corrected=corrected)
        )
        console.print(comparison_table(cmp, base))
        if significance is not None:
            scopes = list(significance.estimates[base]) if per_foundation else [OVERALL]
            console.print(significance_table(significance, scopes=scopes))


@app.command(rich_help_panel="Analyse")
def profile(
    paths: Paths, run: RunOpt = None, fmt: FormatOpt = "table", instrument: InstrumentOpt = None
) -> None:
    """Self-profiles: per-foundation (per-domain) mean and sd of the model's own answers.

    Reverse-keyed items (BFI-44) are reflected before averaging; the output says so.
    """
    from persona_collapse.stats.sources import (
        instrument_option,
        load_runs,
        profile_notes,
        run_self_profile,
    )

    out_format = check_format(fmt)
    runs = load_runs(paths, run_names=run, kind="self", instrument=instrument_option(instrument))
    profiles = {r.name: run_self_profile(r) for r in runs}
    notes = {r.name: profile_notes(r) for r in runs}
    if out_format == "json":
        print_json([{"name": n, **p.to_dict(), **notes[n]} for n, p in profiles.items()])
    else:
        console = stdout_console()
        console.print(profile_table(profiles))
        for n, note in notes.items():
            if note["reverse_keyed_reflected"]:
                items = ", ".join(str(i) for i in note["reverse_keyed_items"])
                console.print(
                    f"{n}: reverse-keyed items {items} reflected (min + max − rating) "
                    f"before the {note['group']} means"
                )


@app.command(name="import", rich_help_panel="Runs and stores")
def import_(
    files: Annotated[
        list[Path],
        typer.Argument(help="Reference-layout CSV files, inspect eval logs (.eval) or folders."),
    ],
    store: Annotated[Path, typer.Option(help="Run store to import into (created if new).")],
    name: Annotated[
        str | None, typer.Option(help="Run name (one file only); default: the file name.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model label; default: the run name.")] = None,
    temperature: Annotated[float, typer.Option(help="Collection temperature.")] = 0.1,
    instrument: InstrumentOpt = None,
) -> None:
    """Import reference-layout CSV files (persona or self runs) or inspect eval logs of the
    persona_collapse tasks into a run store."""
    from persona_collapse.core.instrument import load_instrument
    from persona_collapse.store.inspect_log import (
        check_inspect_log,
        import_inspect_log,
        split_inspect_logs,
    )
    from persona_collapse.store.reference_csv import iter_csv_files
    from persona_collapse.store.sqlite import RunStore

    inst = None if instrument is None else load_instrument(instrument)
    logs, others = split_inspect_logs(files)
    csv_files = iter_csv_files(others) if others else []
    if name is not None and len(csv_files) + len(logs) != 1:
        raise UserError(f"--name needs exactly one file, got {len(csv_files) + len(logs)}")
    for log in logs:  # refuse a wrong log before anything is written
        check_inspect_log(log)
    console = stdout_console()
    with RunStore.open(store) as st:
        for log in logs:
            done = import_inspect_log(st, log, name=name)
            what = "already imported" if done.already else f"{done.samples} slots"
            console.print(f"imported {log} as {done.run.name!r} ({what})")
        for path in csv_files:
            record = st.import_csv(
                path,
                name=name or path.stem,
                model=model,
                temperature=temperature,
                instrument=inst,
            )
            counts = st.counts(record.run_id)
            console.print(f"imported {path} as {record.name!r} ({counts.slots} slots)")


@app.command(rich_help_panel="Runs and stores")
def export(
    store: Annotated[Path, typer.Argument(help="Run store.")],
    run: Annotated[str, typer.Option(help="Run name or id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="'csv' or 'parquet'.")] = "csv",
    raw_csv: Annotated[
        bool,
        typer.Option(
            "--raw-csv",
            help="Write replies as they are; by default a reply a spreadsheet would run "
            "as a formula (=, +, -, @) gets a leading '.",
        ),
    ] = False,
) -> None:
    """Export a run's ratings as CSV (reference layout) or Parquet."""
    from persona_collapse.store.sqlite import RunStore

    if fmt not in ("csv", "parquet"):
        raise UserError(f"--format must be 'csv' or 'parquet', got {fmt!r}")
    if not store.is_file():
        raise InputFileError(store, "run store not found")
    with RunStore.open(store, create=False) as st:
        record = st.find_run(run)
        path = st.export(
            record.run_id, output, format="csv" if fmt == "csv" else "parquet", raw_csv=raw_csv
        )
    stdout_console().print(f"wrote {path}")


@app.command(rich_help_panel="Runs and stores")
def runs(store: Annotated[Path, typer.Argument(help="Run store.")]) -> None:
    """List the runs of a store with their progress."""
    from persona_collapse.store.sqlite import RunStore

    if not store.is_file():
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
    stdout_console().print(table)


@app.command(rich_help_panel="Collect")
def backends() -> None:
    """List the available backends."""
    from persona_collapse.backends import available_backends

    for name in available_backends():
        stdout_console().print(name)


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
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


@app.command(rich_help_panel="Collect")
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run configuration (YAML).")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="Backend name (default: simulator, or the config's).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model label; for the simulator, its preset.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Backend option KEY=VALUE (repeatable)."),
    ] = None,
    personas: Annotated[
        str | None,
        typer.Option(help="Persona set name or file (default: default, or the config's)."),
    ] = None,
    max_personas: Annotated[int | None, typer.Option(help="Use only the first N personas.")] = None,
    instrument: Annotated[
        str | None,
        typer.Option(help="Instrument name or YAML file (default: mfq30, or the config's)."),
    ] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template YAML file.")] = None,
    # Defaults are the config's (core.config.SamplingSettings); shown here so help tells them.
    repetitions: Annotated[
        int | None, typer.Option(help="Repetitions per cell (default: 10, or the config's).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature (default: 0.1, or the config's).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="'sampling' or 'exact' (default: sampling, or the config's)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Run seed (default: 0, or the config's).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight (default: 8, or the config's).")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="Run store (SQLite file; default: pcollapse-runs.db, or the config's)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name.")] = None,
    self_run: Annotated[
        bool | None,
        typer.Option(
            "--self/--no-self", help="Also collect the self run (default: self, or the config's)."
        ),
    ] = None,
    persona_run: Annotated[
        bool | None,
        typer.Option(
            "--persona/--no-persona",
            help="Collect the persona run (default: persona, or the config's).",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show a progress bar (default: progress, or the config's).",
        ),
    ] = None,
    rpm: Annotated[
        float | None, typer.Option("--rpm", help="Cap on requests per minute.", min=0.001)
    ] = None,
    tpm: Annotated[
        float | None, typer.Option("--tpm", help="Cap on tokens per minute.", min=1.0)
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(help="Price table (YAML, USD per 1M tokens by model) for cost estimates."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the requests, tokens and cost a run needs; send nothing."
        ),
    ] = False,
    preflight: PreflightOpt = None,
    fmt: FormatOpt = "table",
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """Collect persona and self runs (resuming a stored run), then print their metrics."""
    from persona_collapse.core.config import RunConfig
    from persona_collapse.study import execute_run

    out_format = check_format(fmt)
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
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if option:
        overrides["backend_options"] = parse_options(option)
    if config is not None:
        cfg = RunConfig.from_yaml(config, allow_outside=allow_outside, **overrides)
    else:
        cfg = RunConfig.from_mapping(overrides, source="command line")
    if prices is not None:
        from persona_collapse.engine.costs import load_price_table

        table = load_price_table(prices)
        found = table.lookup(cfg.model_label)
        if found is None:
            raise UserError(
                f"{prices}: no prices for model {cfg.model_label!r} and no 'default' entry"
            )
        cfg = cfg.model_copy(update={"prices": found})
    if dry_run:
        _print_estimate(cfg, out_format, probe=bool(preflight))
        return
    with interruptible():
        outcome = execute_run(cfg, preflight=preflight is not False)
    # Issue 16: the bias-corrected S and R beside the paper's, as `pcollapse metrics` shows.
    corrected = (
        None
        if outcome.metrics is None or outcome.persona_run is None
        else _stored_corrected(cfg, outcome.persona_run.name)
    )
    if out_format == "json":
        print_json(
            {
                "store": str(cfg.store),
                "metrics": None if outcome.metrics is None else outcome.metrics.to_dict(),
                "corrected": corrected or None,
                "self_profile": None
                if outcome.self_profile is None
                else outcome.self_profile.to_dict(),
                "collected": {k: v.collected for k, v in outcome.collection.items()},
            }
        )
        return
    console = stdout_console()
    if outcome.metrics is not None and outcome.persona_run is not None:
        console.print(
            metrics_table(
                {outcome.persona_run.name: outcome.metrics},
                per_foundation=True,
                band=cfg.analysis.s_band,
                corrected={outcome.persona_run.name: corrected or {}},
            )
        )
    if outcome.self_profile is not None and outcome.self_run is not None:
        console.print(profile_table({outcome.self_run.name: outcome.self_profile}))
        reverse = sorted(outcome.self_run.instrument().reverse_keyed)
        if reverse:
            console.print(
                f"reverse-keyed items {', '.join(map(str, reverse))} reflected "
                "(min + max − rating) before the profile means"
            )
    console.print(f"answers are in {cfg.store}")


def _stored_corrected(cfg: RunConfig, name: str) -> dict[str, Any]:
    """The bias-corrected estimates (overall and per foundation) of a stored persona run,
    with the run's bootstrap settings; empty when its cells cannot be formed."""
    from persona_collapse.stats.sources import load_runs

    (loaded,) = load_runs([cfg.store], run_names=[name], kind="persona")
    return _corrected_json(loaded, cfg.analysis.n_persona_boot, cfg.analysis.seed, True)


def _probe_support(cfg: RunConfig) -> tuple[EndpointSupport, list[EndpointBehaviour]]:
    """Preflight the run's backend (a few probe requests) for ``--dry-run --preflight``."""
    from persona_collapse.core.instrument import load_instrument
    from persona_collapse.engine.preflight import endpoint_support, make_check, run_preflight
    from persona_collapse.study.runs import default_backend, resolve_personas, resolve_template

    instrument = load_instrument(cfg.instrument, include_catch=cfg.include_catch)
    backend = default_backend(cfg, instrument)
    personas = list(resolve_personas(cfg)) if cfg.persona_run else None
    mode: ProbeMode = "exact" if cfg.mode == "exact" else "sampling"
    check = make_check(
        cfg.name or cfg.model_label, backend, instrument, resolve_template(cfg), personas, mode
    )
    behaviours = run_preflight([check]).get(check.label, [])
    return endpoint_support(behaviours), behaviours


def _print_estimate(cfg: RunConfig, out_format: str, *, probe: bool = False) -> None:
    """``run --dry-run``: what the run would send, from the config alone (no backend, no
    key); with ``probe``, first a preflight learns what the endpoint supports."""
    from persona_collapse.engine.costs import CHARS_PER_TOKEN, estimate_collection

    support, behaviours = _probe_support(cfg) if probe else (None, [])
    estimate = estimate_collection(cfg, support=support)
    if out_format == "json":
        data = estimate.to_dict()
        if probe:
            data["preflight"] = [b.to_dict() for b in behaviours]
        print_json(data)
        return
    table = Table(title=f"Dry run: {cfg.backend} {cfg.model_label!r}", title_justify="left")
    for col in (
        "run",
        "mode",
        "to collect",
        "requests",
        "if n ignored",
        "prompt tok",
        "output tok",
    ):
        table.add_column(col, justify="left" if col in ("run", "mode") else "right")
    table.add_column("cost", justify="right")
    for r in estimate.runs:
        table.add_row(
            r.name,
            r.mode,
            f"{r.missing:,} of {r.units:,}",
            f"{r.requests:,}",
            f"{r.requests_without_n:,}",
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            "—" if r.cost_usd is None else f"${r.cost_usd:,.2f}",
        )
    console = stdout_console()
    console.print(table)
    cost = estimate.cost_usd
    console.print(
        f"total: {estimate.requests:,} requests, ~{estimate.prompt_tokens:,} prompt and "
        f"{estimate.completion_tokens:,} output tokens"
        + ("" if cost is None else f", ~${cost:,.2f}")
        + f". Prompt tokens are estimated at {CHARS_PER_TOKEN:g} characters per token; "
        + (
            _support_note(support, sum(r.reasks for r in estimate.runs))
            if support is not None
            else "re-asks of unparseable replies and retries come on top. Nothing was sent."
        )
    )


def _support_note(support: EndpointSupport, reasks: int) -> str:
    """What the forecast assumed after a preflight (which sent only probe requests)."""
    n_note = "honours n" if support.honours_n else "ignores n (one request per repetition)"
    return (
        f"the endpoint {n_note}; {100 * support.unparseable_share:.0f} % of probe replies "
        f"had no rating, so ~{reasks:,} re-asks are included; retries come on top. Only "
        "the preflight's probe requests were sent."
    )


@app.command(rich_help_panel="Studies")
def demo(
    output: Annotated[Path, typer.Option(help="Output folder.")] = Path("pcollapse-demo"),
    max_personas: Annotated[
        int | None, typer.Option(help="Use only the first N built-in personas.", min=2)
    ] = None,
    repetitions: Annotated[int, typer.Option(help="Repetitions per cell.", min=1)] = 10,
    seed: SeedOpt = 0,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
    ] = True,
    force: ForceOpt = False,
) -> None:
    """Run a complete study on the simulator: two families x base/secure/insecure (no network)."""
    from persona_collapse.cli.study import backend_failures, print_outcome
    from persona_collapse.study import run_demo

    with interruptible(), backend_failures():
        outcome = run_demo(
            output,
            max_personas=max_personas,
            repetitions=repetitions,
            seed=seed,
            progress=progress,
            force=force,
        )
    print_outcome(outcome)
