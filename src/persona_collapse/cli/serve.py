"""Serving the simulator over an OpenAI-compatible HTTP API (``pcollapse serve-sim``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from persona_collapse.cli._app import app
from persona_collapse.core.errors import UserError


def _sim_params(pairs: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--sim-param expects KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise UserError(f"--sim-param {key.strip()}: {value!r} is not a number") from None
    return params


@app.command(name="serve-sim", rich_help_panel="Collect")
def serve_sim(
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default; others expose it).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).", min=0)] = 8000,
    model: Annotated[str, typer.Option(help="Model name answered by --preset.")] = "simulator",
    preset: Annotated[str, typer.Option(help="Simulator preset: base, secure, insecure.")] = "base",
    seed: Annotated[int, typer.Option(help="Simulator seed.", min=0)] = 0,
    sim_param: Annotated[
        list[str] | None,
        typer.Option("--sim-param", help="Simulator parameter override KEY=VALUE (repeatable)."),
    ] = None,
    rate_limit: Annotated[
        float, typer.Option(help="Share of requests answered 429.", min=0.0, max=1.0)
    ] = 0.0,
    retry_after: Annotated[
        float, typer.Option(help="Seconds sent in Retry-After with a 429.", min=0.0)
    ] = 1.0,
    server_errors: Annotated[
        float, typer.Option(help="Share of requests answered 500.", min=0.0, max=1.0)
    ] = 0.0,
    slow: Annotated[
        float, typer.Option(help="Share of requests answered after --slow-delay.", min=0.0, max=1.0)
    ] = 0.0,
    slow_delay: Annotated[
        float, typer.Option(help="Delay of a slow response, seconds.", min=0.0)
    ] = 30.0,
    unparseable: Annotated[
        float,
        typer.Option(help="Share of requests answered with a body that is not JSON.", min=0, max=1),
    ] = 0.0,
    ignore_n: Annotated[
        bool, typer.Option("--ignore-n", help="Return one choice whatever n asks for.")
    ] = False,
    fault_seed: Annotated[
        int | None, typer.Option(help="Seed of the fault draws (default: random).", min=0)
    ] = None,
    reasoning: Annotated[
        str, typer.Option(help="Simulate a reasoning model: off, o-series or thinking.")
    ] = "off",
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Require the API key held in this environment variable."),
    ] = None,
    ft_polls_per_status: Annotated[
        int, typer.Option(help="Fine-tuning jobs: polls spent in each status.", min=0)
    ] = 1,
    ft_seconds_per_status: Annotated[
        float, typer.Option(help="Fine-tuning jobs: seconds spent in each status.", min=0.0)
    ] = 0.0,
    ft_failure: Annotated[
        str, typer.Option(help="Fine-tuning jobs fail: none, moderation or validation.")
    ] = "none",
    ft_min_examples: Annotated[
        int, typer.Option(help="Fine-tuning jobs: fewest training examples accepted.", min=1)
    ] = 10,
    control_items: Annotated[
        list[str] | None,
        typer.Option(
            "--control-items",
            help="Capability items file (MMLU/GSM8K JSON) to answer as control items over "
            "HTTP, as in-process (repeatable; lookup prompts need none).",
        ),
    ] = None,
) -> None:
    """Serve the simulator as an OpenAI-compatible API, with optional fault injection.

    Point the 'openai' backend at the printed URL (``-o base_url=URL -o
    api_key_env=null``) to try a study end to end at no cost. Ctrl-C stops it.
    """
    from persona_collapse.serve import run_server, settings_from_options

    settings = settings_from_options(
        model=model,
        preset=preset,
        seed=seed,
        sim_params=_sim_params(sim_param),
        reasoning=reasoning,
        api_key_env=api_key_env,
        faults={
            "rate_limit_rate": rate_limit,
            "retry_after": retry_after,
            "server_error_rate": server_errors,
            "slow_rate": slow,
            "slow_delay": slow_delay,
            "unparseable_rate": unparseable,
            "ignore_n": ignore_n,
            "seed": fault_seed,
        },
        fine_tuning={
            "polls_per_status": ft_polls_per_status,
            "seconds_per_status": ft_seconds_per_status,
            "failure": ft_failure,
            "min_examples": ft_min_examples,
        },
        control_items=list(control_items or []),
    )
    # Building the service validates the preset and parameters before binding.
    from persona_collapse.serve import SimService

    SimService(settings)

    def ready(url: str) -> None:
        sys.stdout.write(f"serve-sim: model {model!r} (preset {preset}) at {url}\n")
        sys.stdout.flush()

    try:
        run_server(settings, host=host, port=port, on_ready=ready)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
