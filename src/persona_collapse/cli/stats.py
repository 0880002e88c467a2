"""Statistical commands: difference tests, estimator audit, power and budget planning."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona_collapse.cli._app import (
    FormatOpt,
    RunOpt,
    SeedOpt,
    app,
    check_format,
    fmt_pct,
    print_json,
    stdout_console,
)
from persona_collapse.core.errors import UserError

if TYPE_CHECKING:  # imported where used, so help screens stay fast
    from persona_collapse.stats.planning import Mode
    from persona_collapse.stats.significance import RunCells


@app.command(rich_help_panel="Statistics")
def audit(
    replications: Annotated[int, typer.Option(help="Simulated studies per preset.", min=2)] = 200,
    preset: Annotated[
        list[str] | None,
        typer.Option(
            "--preset", help="Simulator preset (repeatable; default base, secure, insecure)."
        ),
    ] = None,
    personas: Annotated[int, typer.Option(help="Personas per run.", min=2)] = 100,
    repetitions: Annotated[int, typer.Option(help="Ratings per cell.", min=2)] = 10,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.1,
    persona_boot: Annotated[int, typer.Option(help="Persona-bootstrap draws.", min=2)] = 2000,
    rerun_boot: Annotated[int, typer.Option(help="Rerun-bootstrap draws.", min=2)] = 400,
    pool: Annotated[
        int, typer.Option(help="Personas in the simulated population.", min=2)
    ] = 10_000,
    seed: SeedOpt = 0,
    fmt: FormatOpt = "table",
    counts: Annotated[
        bool,
        typer.Option(
            "--counts/--no-counts",
            help="Also the count statistics (non-unanimity, Gini, ...; about twice the time).",
        ),
    ] = True,
) -> None:
    """Audit the estimators on the simulator: bias, RMSE and 95 % interval coverage."""
    from persona_collapse.stats.audit import DEFAULT_PRESETS, audit_estimators
    from persona_collapse.stats.display import label, test_lead

    out_format = check_format(fmt)
    if pool < personas:
        raise UserError(f"--pool ({pool}) must be at least --personas ({personas})")
    if not (math.isfinite(temperature) and temperature > 0):
        raise UserError(f"--temperature must be a number > 0, got {temperature}")
    start = time.perf_counter()
    report = audit_estimators(
        presets=tuple(preset) if preset else DEFAULT_PRESETS,
        replications=replications,
        n_personas=personas,
        n_repetitions=repetitions,
        temperature=temperature,
        n_persona_boot=persona_boot,
        n_rerun_boot=rerun_boot,
        pool_size=pool,
        rng=seed,
        counts=counts,
    )
    elapsed = time.perf_counter() - start
    if out_format == "json":
        print_json({**report.to_dict(), "elapsed_s": elapsed})
        return
    console = stdout_console()
    level = round(100 * report.confidence)
    est = Table(
        title=(
            f"Estimators: {report.replications} replications of {report.n_personas} personas × "
            f"{report.n_repetitions} ratings at T = {report.temperature:g}; truth = population of "
            f"{report.pool_size} personas"
        ),
        title_justify="left",
    )
    for col in (
        "preset",
        "metric",
        "estimator",
        "truth",
        "mean",
        "bias",
        "RMSE",
        "SD",
        "mean SE",
        f"{level} % coverage",
    ):
        est.add_column(col, justify="left" if col in ("preset", "metric", "estimator") else "right")
    for row in report.estimators:
        est.add_row(
            row.preset,
            label(row.metric),
            row.estimator,
            f"{row.truth:.4f}",
            f"{row.mean:.4f}",
            fmt_pct(row.relative_bias),
            f"{row.rmse:.4f}",
            f"{row.sd:.4f}",
            f"{row.mean_se:.4f}",
            _share(row.coverage, row.coverage_mcse),
        )
    console.print(est)
    if report.foundations:
        # Corrected S and R on each foundation's items (jackknife-t intervals).
        found = Table(
            title=f"Per foundation: {level} % coverage of the corrected estimators",
            title_justify="left",
        )
        for col in ("preset", "foundation", "S", "R"):
            found.add_column(col, justify="left" if col in ("preset", "foundation") else "right")
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for row in report.foundations:
            if row.estimator == "corrected" and row.metric in ("S", "R"):
                shown = _share(row.coverage, row.coverage_mcse)
                cells.setdefault((row.preset, row.scope), {})[row.metric] = shown
        for (preset_name, scope), shares in cells.items():
            found.add_row(preset_name, scope, shares.get("S", "—"), shares.get("R", "—"))
        console.print(found)
    diff = Table(
        title=f"Difference tests (relative changes; rejections at α = {report.alpha:g})",
        title_justify="left",
    )
    for col in (
        "contrast",
        "metric",
        "estimator",
        "variance",
        "truth",
        "bias",
        "SD(log)",
        "mean SE",
        "coverage",
        "rejected",
    ):
        diff.add_column(
            col,
            justify="left" if col in ("contrast", "metric", "estimator", "variance") else "right",
        )
    for d in report.differences:
        if test_lead(d.metric) != d.metric:
            continue  # the same test as another statistic's row (sigma_bar: R's)
        diff.add_row(
            d.contrast,
            label(d.metric),
            d.estimator,
            d.variance,
            fmt_pct(d.truth),
            f"{100 * d.bias:+.2f} pts",
            f"{d.sd_log:.4f}",
            f"{d.mean_se:.4f}",
            _share(d.coverage, d.coverage_mcse),
            _share(d.rejection_rate, d.rejection_mcse),
        )
    console.print(diff)
    agree = Table(
        title="Sampling against exact (logprob) values of the same personas", title_justify="left"
    )
    for col in (
        "preset",
        "metric",
        "estimator",
        "sampled / exact − 1",
        "within run SE",
        "paired test rejects",
    ):
        agree.add_column(
            col, justify="left" if col in ("preset", "metric", "estimator") else "right"
        )
    for a in report.agreement:
        agree.add_row(
            a.preset,
            label(a.metric),
            a.estimator,
            fmt_pct(a.mean_relative_difference),
            _share(a.within_se, a.within_se_mcse),
            _share(a.paired_rejection_rate, a.paired_rejection_mcse),
        )
    console.print(agree)
    if report.no_truth:
        shown = ", ".join(label(name) for name in report.no_truth)
        console.print(f"no truth available (null contrast only): {shown}")
    console.print(
        f"seed {report.seed}; {report.n_persona_boot} persona + {report.n_rerun_boot} rerun "
        f"bootstrap draws per interval; {elapsed:.1f} s; ± is the Monte-Carlo SE "
        "sqrt(p (1 − p) / replications)"
    )
    if report.warning is not None:
        console.print(f"warning: {report.warning}")


def _share(value: float, mcse: float) -> str:
    """A coverage or rejection share with its Monte-Carlo SE, in percent."""
    return f"{100 * value:.1f} ± {100 * mcse:.1f} %"


# --- plan -----------------------------------------------------------------------------------


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values:
        raise UserError(f"{option} expects at least one integer")
    return values


@app.command(rich_help_panel="Statistics")
def plan(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Pilot run: a run store or reference-layout CSV file (or none: --preset)."
        ),
    ] = None,
    change: Annotated[
        float,
        typer.Option(
            help="Change to detect: relative for log-scale statistics (-0.2: a 20 % drop; "
            "write --change=-0.2), a plain difference for rates and shares (-0.05)."
        ),
    ] = -0.2,
    metric: Annotated[
        str,
        typer.Option(
            help="Statistic to plan for: 'S', 'R', 'sigma_bar' or a count statistic "
            "('non_unanimity_rate', ...)."
        ),
    ] = "R",
    power: Annotated[float, typer.Option(help="Target power.")] = 0.8,
    alpha: Annotated[float, typer.Option(help="Test level.")] = 0.05,
    preset: Annotated[
        str | None, typer.Option(help="Simulator preset as pilot (when no pilot run is given).")
    ] = None,
    run: RunOpt = None,
    personas: Annotated[
        str, typer.Option(help="Persona counts, comma-separated.")
    ] = "25,50,100,200,400",
    repetitions: Annotated[
        str, typer.Option(help="Ratings per cell, comma-separated.")
    ] = "2,3,5,10,20",
    correlation: Annotated[
        float,
        typer.Option(help="Correlation of the two runs' estimates (0: independent, conservative)."),
    ] = 0.0,
    prices: Annotated[Path | None, typer.Option(help="Price table (YAML).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name to look up in --prices.")] = None,
    input_price: Annotated[float | None, typer.Option(help="USD per 1M input tokens.")] = None,
    output_price: Annotated[float | None, typer.Option(help="USD per 1M output tokens.")] = None,
    prompt_tokens: Annotated[
        float | None,
        typer.Option(help="Prompt tokens per request (default: measured or estimated)."),
    ] = None,
    unparseable_rate: Annotated[
        float | None,
        typer.Option(help="Share of replies without a rating (default: measured or 0.02)."),
    ] = None,
    seed: SeedOpt = 0,
    fmt: FormatOpt = "table",
    instrument: Annotated[
        str | None,
        typer.Option(help="Instrument of a CSV pilot: mfq30, bfi44 or a YAML file."),
    ] = None,
    persona_set: Annotated[
        str,
        typer.Option(
            help="Persona set the study will use (name or file); plan warns when a design "
            "needs more personas than it holds."
        ),
    ] = "default",
) -> None:
    """Personas × repetitions needed to detect a change, with requests, tokens and cost."""
    from persona_collapse.core.errors import did_you_mean
    from persona_collapse.engine.costs import ModelPrices, load_price_table
    from persona_collapse.stats.display import label
    from persona_collapse.stats.planning import (
        DEFAULT_UNPARSEABLE_RATE,
        plan_design,
        variance_models,
    )
    from persona_collapse.stats.significance import (
        count_statistics_tested,
        is_log_scale,
        names_tested,
    )

    out_format = check_format(fmt)
    counted = tuple(st.name for st in count_statistics_tested())
    names = (*names_tested(), *counted)
    if metric not in names:
        hint = did_you_mean(metric, names) or "known: " + ", ".join(names)
        raise UserError(f"--metric: unknown statistic {metric!r}; {hint}")
    log_scale = is_log_scale(metric)
    if change == 0 or (log_scale and not change > -1):
        raise UserError(f"--change must be a non-zero relative change above -1, got {change}")
    for name, value in (("--power", power), ("--alpha", alpha)):
        if not 0 < value < 1:
            raise UserError(f"{name} must lie strictly between 0 and 1, got {value}")
    if not -1 < correlation < 1:
        raise UserError(f"--correlation must lie strictly between -1 and 1, got {correlation}")
    grid_personas = _int_list(personas, "--personas")
    grid_reps = _int_list(repetitions, "--repetitions")
    if min(grid_personas) < 2:
        raise UserError("--personas values must be >= 2")
    if min(grid_reps) < 2:
        raise UserError("--repetitions values must be >= 2 (a cell sd needs two ratings)")
    if unparseable_rate is not None and not 0 <= unparseable_rate < 1:
        raise UserError(f"--unparseable-rate must lie in [0, 1), got {unparseable_rate}")
    if prompt_tokens is not None and not prompt_tokens > 0:
        raise UserError(f"--prompt-tokens must be > 0, got {prompt_tokens}")

    price: ModelPrices | None = None
    if prices is not None:
        price = load_price_table(prices).lookup(model)
        if price is None:
            raise UserError(f"{prices}: no prices for model {model!r} and no 'default' entry")
    elif input_price is not None or output_price is not None:
        if input_price is None or output_price is None or input_price < 0 or output_price < 0:
            raise UserError("--input-price and --output-price go together and must be >= 0")
        price = ModelPrices(input=input_price, output=output_price)

    from persona_collapse.core.personas import get_persona_set

    available = len(get_persona_set(persona_set))
    # A count statistic's value can depend on the ratings per cell, so a preset pilot
    # then gets as many ratings as the largest design (the moment statistics keep 10).
    pilot_reps = max(10, *grid_reps) if metric in counted else 10
    measured_tokens, measured_rate, pilot_cells, description = _load_pilot(
        paths, run, preset, seed, instrument, pilot_reps
    )
    try:
        models = variance_models(
            pilot_cells, rng=seed, repetitions=grid_reps, counts=metric in counted
        )
    except ValueError as exc:
        raise UserError(f"pilot {description}: {exc}") from None
    result = plan_design(
        models[metric],
        change=change,
        power=power,
        alpha=alpha,
        personas=grid_personas,
        repetitions=grid_reps,
        items=len(pilot_cells.item_ids),
        prompt_tokens=prompt_tokens if prompt_tokens is not None else measured_tokens,
        unparseable_rate=(
            unparseable_rate
            if unparseable_rate is not None
            else (measured_rate if measured_rate is not None else DEFAULT_UNPARSEABLE_RATE)
        ),
        prices=price,
        correlation=correlation,
        pilot=description,
    )
    if out_format == "json":
        print_json(result.to_dict())
        return
    console = stdout_console()
    name = label(metric)
    target = f"{100 * change:+.0f} %" if log_scale else f"{change:+g}"
    table = Table(
        title=(
            f"Detecting Δ{name} = {target} with power {power:g} at α = {alpha:g} "
            f"(pilot: {description}; per variant)"
        ),
        title_justify="left",
    )
    for col in (
        "mode",
        "personas",
        "reps",
        "SE(log)" if log_scale else "SE",
        "power",
        "requests",
        "without n",
        "tokens in",
        "tokens out",
        "cost",
        "",
    ):
        table.add_column(col, justify="left" if col in ("mode", "") else "right")
    for p in result.points:
        table.add_row(
            p.mode,
            str(p.personas),
            str(p.repetitions) if p.mode == "sampling" else "—",
            f"{p.se_log:.4f}",
            f"{p.power:.3f}",
            f"{p.requests:,}",
            f"{p.requests_without_n:,}",
            f"{p.prompt_tokens:,}",
            f"{p.completion_tokens:,}",
            "—" if p.cost_usd is None else f"${p.cost_usd:,.2f}",
            "✓" if p.reaches_target else "",
        )
    console.print(table)
    modes: tuple[Mode, ...] = ("sampling", "exact")
    for mode in modes:
        best = result.cheapest(mode)
        if best is None:
            console.print(f"{mode}: no design in the grid reaches power {power:g}")
        else:
            reps = f" × {best.repetitions} ratings" if mode == "sampling" else ""
            cost = "" if best.cost_usd is None else f", ${best.cost_usd:,.2f}"
            console.print(
                f"{mode}: cheapest design reaching the target: {best.personas} personas{reps} "
                f"(power {best.power:.2f}; {best.requests:,} requests{cost} per variant)"
            )
            if best.personas > available:
                console.print(
                    f"warning: the {mode} design needs {best.personas} personas but persona "
                    f"set {persona_set!r} holds {available}; add personas or choose a larger set",
                    markup=False,
                    highlight=False,
                )
    beyond = [n for n in grid_reps if n > result.model.pilot_repetitions]
    if metric in counted and beyond:
        console.print(
            f"note: the pilot has {result.model.pilot_repetitions:g} ratings per cell; "
            f"designs with {', '.join(map(str, beyond))} are extrapolated (this statistic's "
            "value can change with the ratings per cell)",
            markup=False,
            highlight=False,
        )
    console.print(
        f"assumptions: {result.prompt_tokens:.0f} prompt tokens per request, "
        f"{100 * result.unparseable_rate:.1f} % replies without a rating, correlation "
        f"{correlation:g} between the two runs; exact mode needs a backend with log-probabilities"
    )


def _load_pilot(
    paths: Sequence[Path] | None,
    run_names: Sequence[str] | None,
    preset: str | None,
    seed: int,
    instrument: str | None = None,
    preset_repetitions: int = 10,
) -> tuple[float | None, float | None, RunCells, str]:
    """(prompt tokens per request, unparseable rate, pilot cells, description)."""
    import numpy as np

    from persona_collapse.stats.planning import pilot_from_distributions, pilot_from_preset
    from persona_collapse.stats.significance import run_cells
    from persona_collapse.stats.sources import instrument_option, is_run_store, load_runs
    from persona_collapse.store.sqlite import RunStore

    if paths and preset is not None:
        raise UserError("give either a pilot run or --preset, not both")
    if not paths:
        name = preset or "base"
        cells = pilot_from_preset(name, n_repetitions=preset_repetitions, rng=seed)
        description = (
            f"simulator preset {name!r}, {cells.n_personas} personas × "
            f"{cells.cells.values.shape[2] if cells.cells is not None else 0} ratings"
        )
        return None, None, cells, description
    runs = load_runs(
        paths, run_names=run_names, kind="persona", instrument=instrument_option(instrument)
    )
    if len(runs) != 1:
        names = ", ".join(r.name for r in runs)
        raise UserError(
            f"plan needs one pilot run, found {len(runs)} ({names}); pick one with --run"
        )
    pilot = runs[0]
    tokens: float | None = None
    rate: float | None = None
    store_path, _, run_name = pilot.source.partition("#")
    if run_name and is_run_store(Path(store_path)):
        with RunStore.open(store_path, create=False) as store:
            record = store.find_run(run_name)
            requests, usage = store.usage(record.run_id)
            counts = store.counts(record.run_id)
        if requests > 0:
            tokens = usage.prompt_tokens / requests
        if counts.attempts > 0:
            rate = max(0.0, 1.0 - counts.valid / counts.attempts)
    try:
        if pilot.distributions is not None and len(pilot.distributions):
            d = pilot.distributions
            scale = list(pilot.instrument.scale)
            persona_ids = np.unique(d["persona_id"].to_numpy())
            item_ids = np.unique(d["item_id"].to_numpy())
            probs = np.zeros((len(persona_ids), len(item_ids), len(scale)))
            rows = np.searchsorted(persona_ids, d["persona_id"].to_numpy())
            cols = np.searchsorted(item_ids, d["item_id"].to_numpy())
            probs[rows, cols] = d[[f"p{k}" for k in scale]].to_numpy(dtype=float)
            if np.any(probs.sum(axis=2) <= 0):
                raise UserError(f"pilot {pilot.name!r}: some cells have no stored distribution")
            probs /= probs.sum(axis=2, keepdims=True)
            cells = pilot_from_distributions(
                probs,
                scale=scale,
                item_ids=[int(i) for i in item_ids],
                foundations=pilot.foundations,
                rng=seed,
            )
        else:
            cells = run_cells(pilot)
    except ValueError as exc:
        raise UserError(f"pilot {pilot.name!r}: {exc}") from None
    return tokens, rate, cells, f"{pilot.name} ({cells.n_personas} personas)"
