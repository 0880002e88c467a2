"""``pcollapse watch``: measure LoRA checkpoints as the trainer saves them, or the
checkpoints of an OpenAI fine-tuning job as the API lists them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from persona_collapse.cli._app import app, interruptible, stdout_console
from persona_collapse.cli.finetune import ApiKeyEnvOpt, BaseUrlOpt, key_env_name
from persona_collapse.core.errors import UserError

if TYPE_CHECKING:
    from persona_collapse.study.watch import MeasuredCheckpoint


@app.command(rich_help_panel="Collect")
def watch(
    store: Annotated[Path, typer.Option(help="Run store (SQLite file).")],
    folder: Annotated[
        Path | None, typer.Argument(help="Folder where the trainer saves checkpoint-N/.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Base model the adapters belong to.")
    ] = None,
    openai_job: Annotated[
        str | None,
        typer.Option(
            "--openai-job",
            help="Watch this OpenAI fine-tuning job's checkpoints instead of a folder.",
        ),
    ] = None,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    prefix: Annotated[
        str | None,
        typer.Option(
            help="Run names are PREFIX/stepNNNN (default: the folder name, or the job id)."
        ),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="Backend name (default: transformers; openai for a job).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Backend option KEY=VALUE (repeatable)."),
    ] = None,
    adapter_option: Annotated[
        str, typer.Option(help="Backend option that takes the checkpoint folder.")
    ] = "adapter",
    personas: Annotated[
        str | None, typer.Option(help="Persona set name or file (default: default).")
    ] = None,
    max_personas: Annotated[int | None, typer.Option(help="Use only the first N personas.")] = None,
    # Defaults are core.config.RunConfig's; shown here so help tells them.
    repetitions: Annotated[
        int | None, typer.Option(help="Repetitions per cell (default: 10).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature (default: 0.1).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed (default: 0).")] = None,
    mode: Annotated[
        str | None, typer.Option(help="'sampling' or 'exact' (default: sampling).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0)] = 60.0,
    max_concurrency: Annotated[
        int, typer.Option(help="Checkpoints measured at once (each loads its model).", min=1)
    ] = 1,
    once: Annotated[
        bool, typer.Option("--once", help="Measure what is there now, then stop.")
    ] = False,
    max_polls: Annotated[
        int | None, typer.Option(help="Stop after this many polls.", min=1)
    ] = None,
) -> None:
    """Measure every checkpoint-N/ of a LoRA training folder (or every checkpoint of an
    OpenAI fine-tuning job, --openai-job), and each new one as it appears (resumable:
    what is stored is never asked again)."""
    from persona_collapse.cli.core import parse_options
    from persona_collapse.core.config import RunConfig
    from persona_collapse.study.watch import (
        find_checkpoints,
        watch_checkpoints,
        watch_openai_checkpoints,
    )

    if (folder is None) == (openai_job is None):
        raise UserError("give either a checkpoint FOLDER or --openai-job JOB_ID")
    if folder is not None:
        if model is None:
            raise UserError("--model: the base model the adapters belong to is required")
        find_checkpoints(folder)  # a missing folder is one line before anything else
    elif model is not None:
        raise UserError("--model is for a folder of adapters; a job's checkpoints are models")
    key_env = key_env_name(api_key_env)
    overrides: dict[str, Any] = {
        "backend": backend or ("transformers" if folder is not None else "openai"),
        "model": model or str(openai_job),  # each job checkpoint sets its own model
        "personas": personas,
        "max_personas": max_personas,
        "repetitions": repetitions,
        "temperature": temperature,
        "seed": seed,
        "mode": mode,
        "store": store,
        "self_run": False,
        "progress": False,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if option:
        overrides["backend_options"] = parse_options(option)
    if folder is not None and adapter_option in overrides.get("backend_options", {}):
        raise UserError(f"--option {adapter_option}=... is set per checkpoint; remove it")
    if openai_job is not None:
        # The checkpoint models are served where the job runs, with the same key.
        options = overrides.setdefault("backend_options", {})
        if base_url is not None:
            options.setdefault("base_url", base_url)
        options.setdefault("api_key_env", key_env)
    cfg = RunConfig.from_mapping(overrides, source="command line")
    if folder is not None:
        name = prefix if prefix is not None else folder.resolve().name
    else:
        name = prefix if prefix is not None else str(openai_job)
    console = stdout_console()

    def report(done: MeasuredCheckpoint) -> None:
        m = None if done.outcome is None else done.outcome.metrics
        summary = f" ({done.problem})" if done.problem else ""
        if m is not None:
            summary = f": S {m.S:.3f} ± {m.S_se:.3f}, R {m.R:.3f} ± {m.R_se:.3f}"
        console.print(f"step {done.step} → {store}:{done.name}{summary}", markup=False)

    last: list[tuple[str, int]] = []

    def status(state: str, count: int) -> None:
        if not last or last[-1] != (state, count):
            console.print(f"job {openai_job}: {state}, {count} checkpoints", markup=False)
        last.append((state, count))

    with interruptible():
        if folder is not None:
            watch_checkpoints(
                folder,
                cfg,
                prefix=name,
                adapter_option=adapter_option,
                interval=interval,
                max_concurrency=max_concurrency,
                max_polls=1 if once else max_polls,
                on_measured=report,
            )
        else:
            watch_openai_checkpoints(
                str(openai_job),
                cfg,
                prefix=name,
                base_url=base_url,
                api_key_env=key_env,
                interval=interval,
                max_concurrency=max_concurrency,
                max_polls=1 if once else max_polls,
                on_measured=report,
                on_status=status,
            )
