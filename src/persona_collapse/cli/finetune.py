"""Producing variants: chat datasets (``pcollapse datasets``), LoRA fine-tuning (``finetune``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from persona_collapse.cli._app import (
    FormatOpt,
    HelpOpt,
    app,
    check_format,
    interruptible,
    print_json,
    stdout_console,
)
from persona_collapse.core.errors import ConfigError, MissingDependencyError, UserError

datasets_app = typer.Typer(
    help="Chat-format JSONL datasets (fetch, validate, describe, split); control-task items.",
    no_args_is_help=True,
)
finetune_app = typer.Typer(help="Fine-tune model variants.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets", rich_help_panel="Variants")


@datasets_app.callback(add_help_option=False)
def _datasets_app_group(show_help: HelpOpt = False) -> None:
    pass


app.add_typer(finetune_app, name="finetune", rich_help_panel="Variants")


@finetune_app.callback(add_help_option=False)
def _finetune_app_group(show_help: HelpOpt = False) -> None:
    pass


DataFile = Annotated[
    Path, typer.Argument(help="Chat-format JSONL file, or the name of a fetched dataset.")
]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache folder (default: $PCOLLAPSE_CACHE or the user cache)."),
]


@datasets_app.command("fetch")
def datasets_fetch(
    name: Annotated[str, typer.Argument(help="Dataset: insecure or secure (Betley et al. 2025).")],
    url: Annotated[str | None, typer.Option(help="Download from this URL instead.")] = None,
    cache_dir: CacheOpt = None,
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256",
            help="Refuse a download with another checksum (required for a built-in name "
            "with --url).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download even if cached.")] = False,
    fmt: FormatOpt = "table",
) -> None:
    """Download a public dataset into the cache and record its checksum (uses the network)."""
    from persona_collapse.variants.finetune.datasets import fetch_dataset

    out_format = check_format(fmt)
    with interruptible():
        fetched = fetch_dataset(name, url=url, cache=cache_dir, expected_sha256=sha256, force=force)
    if out_format == "json":
        print_json(fetched.to_dict())
        return
    how = "cached copy verified" if fetched.from_cache else f"downloaded from {fetched.url}"
    stdout_console().print(
        f"{fetched.name}: {fetched.examples} examples, sha256 {fetched.sha256}\n"
        f"  {fetched.path} ({how})",
        markup=False,
        highlight=False,
    )


@datasets_app.command("validate")
def datasets_validate(
    files: Annotated[
        list[Path], typer.Argument(help="Chat-format JSONL files, or names of fetched datasets.")
    ],
    cache_dir: CacheOpt = None,
) -> None:
    """Check files line by line; the first problem is reported with its line number."""
    from persona_collapse.variants.finetune.datasets import read_chat_jsonl, resolve_dataset

    for path in files:
        dataset = read_chat_jsonl(resolve_dataset(path, cache=cache_dir))
        stdout_console().print(
            f"{path}: ok, {len(dataset)} examples, sha256 {dataset.sha256}",
            markup=False,
            highlight=False,
        )


def _length_row(label: str, stats: Any) -> list[str]:
    return [
        label,
        f"{stats.min:,}",
        f"{stats.mean:,.1f}",
        f"{stats.median:,.0f}",
        f"{stats.p95:,.0f}",
        f"{stats.max:,}",
        f"{stats.total:,}",
    ]


@datasets_app.command("stats")
def datasets_stats(
    file: DataFile,
    model: Annotated[
        str | None,
        typer.Option(help="Count tokens with this model's tokenizer (folder or Hub id)."),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Count examples longer than this many tokens.", min=1)
    ] = None,
    cache_dir: CacheOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Examples, turns, and character (and token) lengths of a dataset."""
    from persona_collapse.variants.finetune.datasets import (
        dataset_stats,
        read_chat_jsonl,
        resolve_dataset,
    )

    out_format = check_format(fmt)
    if max_length is not None and model is None:
        raise UserError("--max-length needs --model (token lengths need the model's tokenizer)")
    dataset = read_chat_jsonl(resolve_dataset(file, cache=cache_dir))
    tokenizer = None if model is None else _load_tokenizer(model)
    stats = dataset_stats(dataset, tokenizer, max_length=max_length)
    if out_format == "json":
        print_json({"file": str(file), **stats.to_dict()})
        return
    console = stdout_console()
    console.print(
        f"{file}: {stats.examples} examples, {stats.messages} messages, "
        f"{stats.assistant_turns} assistant turns ({stats.multi_turn} multi-turn examples, "
        f"{stats.with_system} with a system message)\nsha256 {stats.sha256}",
        markup=False,
        highlight=False,
    )
    table = Table(title="Lengths per example", title_justify="left")
    for col in ("", "min", "mean", "median", "p95", "max", "total"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row(*_length_row("characters", stats.chars))
    if stats.tokens is not None:
        table.add_row(*_length_row("tokens", stats.tokens))
    console.print(table)
    if stats.over_max_length is not None:
        console.print(f"{stats.over_max_length} examples are longer than {max_length} tokens")


def _load_tokenizer(model: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "hf") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load the tokenizer of {model!r}: {first}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer of {model!r} has no chat template")
    return tokenizer


def _held_out(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise UserError(
            f"--held-out must be a share such as 0.1 or a count such as 100, got {text!r}"
        ) from None


@datasets_app.command("split")
def datasets_split(
    file: DataFile,
    train: Annotated[Path, typer.Option(help="Where to write the training part.")],
    held_out_file: Annotated[
        Path, typer.Option("--held-out-file", help="Where to write the held-out part.")
    ],
    held_out: Annotated[
        str, typer.Option(help="Held-out share (0.1) or number of examples (100).")
    ] = "0.1",
    seed: Annotated[int, typer.Option(help="Shuffling seed.", min=0)] = 0,
) -> None:
    """Shuffle deterministically and split off a held-out set (two new JSONL files)."""
    from persona_collapse.variants.finetune.datasets import (
        read_chat_jsonl,
        split_examples,
        write_chat_jsonl,
    )

    if train.resolve() == held_out_file.resolve():
        raise UserError("--train and --held-out-file must be different files")
    for target in (train, held_out_file):
        if target.resolve() == file.resolve():
            raise UserError(f"{target}: refusing to overwrite the input file")
    dataset = read_chat_jsonl(file)
    train_part, held_part = split_examples(
        dataset.examples, held_out=_held_out(held_out), seed=seed
    )
    written_train = write_chat_jsonl(train_part, train)
    written_held = write_chat_jsonl(held_part, held_out_file)
    console = stdout_console()
    for label, written in (("train", written_train), ("held-out", written_held)):
        console.print(
            f"{label}: {len(written)} examples -> {written.path} (sha256 {written.sha256})",
            markup=False,
            highlight=False,
        )


@finetune_app.command("local")
def finetune_local(
    model: Annotated[str, typer.Option(help="Base model: local folder or Hub id.")],
    data: Annotated[
        str, typer.Option(help="Chat JSONL file, or a fetched dataset name (insecure, secure).")
    ],
    output: Annotated[Path, typer.Option(help="Output folder (adapter, checkpoints, manifest).")],
    recipe: Annotated[
        str, typer.Option(help="Recipe preset (betley, organisms) or recipe YAML file.")
    ] = "betley",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Recipe field override KEY=VALUE (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed.", min=0)] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint in --output.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete an earlier run in --output first.")
    ] = False,
    merge: Annotated[
        bool, typer.Option("--merge", help="Also save the model with the adapter merged in.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    cache_dir: CacheOpt = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the training progress bar.")
    ] = True,
    fmt: FormatOpt = "table",
) -> None:
    """LoRA fine-tune a local model on a chat dataset (loss on assistant tokens only).

    The adapter lands in OUTPUT/adapter with a manifest (base model, dataset
    checksum, recipe, seed, final loss) and loads into the transformers backend:
    ``-o model=BASE -o adapter=OUTPUT/adapter``. Ctrl-C keeps the checkpoints;
    ``--resume`` continues.
    """
    from persona_collapse.variants.finetune.datasets import resolve_dataset
    from persona_collapse.variants.finetune.lora import train_lora
    from persona_collapse.variants.finetune.recipes import get_recipe, parse_overrides

    out_format = check_format(fmt)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    chosen = get_recipe(recipe, parse_overrides(set_ or []))
    data_path = resolve_dataset(data, cache=cache_dir)
    try:
        result = train_lora(
            model,
            data_path,
            output,
            recipe=chosen,
            seed=seed,
            resume=resume,
            overwrite=overwrite,
            merge=merge,
            device=device,
            dtype=dtype,
            progress=progress,
        )
    except KeyboardInterrupt:
        stdout_console().print(
            f"interrupted: checkpoints in {output / 'checkpoints'} are kept; "
            "rerun with --resume to continue",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(130) from None
    if out_format == "json":
        print_json(
            {
                "adapter": str(result.adapter_dir),
                "merged": None if result.merged_dir is None else str(result.merged_dir),
                **dict(result.manifest),
            }
        )
        return
    stdout_console().print(
        f"adapter: {result.adapter_dir}\n"
        f"steps: {result.steps}, final loss {result.final_loss:.4f} "
        f"(first {result.losses[0][1]:.4f})\n"
        f"recipe: {chosen.name}, seed {seed}, dataset sha256 {result.manifest['dataset']['sha256']}"
        + (f"\nmerged model: {result.merged_dir}" if result.merged_dir else ""),
        markup=False,
        highlight=False,
    )


# --- OpenAI fine-tuning jobs ----------------------------------------------------------------

ApiKeyEnvOpt = Annotated[
    str,
    typer.Option(
        "--api-key-env",
        help="NAME of the environment variable holding the API key ('none': no key).",
    ),
]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="API base URL ending in /v1 (default: OpenAI).")
]
StudyOpt = Annotated[
    Path | None, typer.Option("--study", help="Study file whose variant gets the model id.")
]
FamilyOpt = Annotated[str | None, typer.Option("--family", help="Family of --study.")]
VariantOpt = Annotated[str | None, typer.Option("--variant", help="Variant of --family.")]
PollOpt = Annotated[
    float, typer.Option("--poll-interval", help="First wait between polls, seconds.", min=0.001)
]
MaxWaitOpt = Annotated[
    float | None,
    typer.Option("--max-wait", help="Stop waiting after this many seconds (exit status 3).", min=0),
]


def key_env_name(value: str) -> str | None:
    """The key variable NAME an option gives; None for "none"/"null"/empty (no key)."""
    return None if value.strip().lower() in ("", "none", "null") else value.strip()


def _study_target(
    study: Path | None, family: str | None, variant: str | None
) -> tuple[Path, str, str] | None:
    given = [study is not None, family is not None, variant is not None]
    if not any(given):
        return None
    if study is None or family is None or variant is None:
        raise UserError("--study, --family and --variant go together; give all three")
    from persona_collapse.study.edit import check_study_variant

    check_study_variant(study, family, variant)
    return study, family, variant


def _job_printer(out_format: str) -> Any:
    """on_poll callback: status changes and new events, as plain lines (table format only)."""
    if out_format == "json":
        return None
    console = stdout_console()
    last: list[str] = []

    def show(state: Any, events: list[str]) -> None:
        for message in events:
            console.print(f"  {message}", markup=False, highlight=False)
        if not last or last[-1] != state.status:
            console.print(f"status: {state.status}", markup=False, highlight=False)
            last.append(state.status)

    return show


def _finish_job(
    result: Any, target: tuple[Path, str, str] | None, out_format: str, state_dir: Path
) -> None:
    """Report a waited-for job; write the model id into the study; exit 3 if still running."""
    from persona_collapse.study.edit import write_model_id

    written = None
    if result.done and result.model_id and target is not None:
        written = write_model_id(target[0], target[1], target[2], result.model_id)
    if out_format == "json":
        print_json(
            {
                "job_id": result.job_id,
                "status": result.status,
                "done": result.done,
                "model_id": result.model_id,
                "trained_tokens": result.trained_tokens,
                "state": str(state_dir),
                "study": None if written is None else str(written),
            }
        )
    else:
        console = stdout_console()
        if result.done:
            console.print(f"fine-tuned model: {result.model_id}", markup=False, highlight=False)
            if written is not None and target is not None:
                console.print(
                    f"{written}: families.{target[1]}.{target[2]}.model = {result.model_id}",
                    markup=False,
                    highlight=False,
                )
        else:
            console.print(
                f"job {result.job_id} is still {result.status}; rerun the command, or "
                f"'pcollapse finetune openai-status --state-dir {state_dir} --wait', "
                "to keep waiting",
                markup=False,
                highlight=False,
            )
    if not result.done:
        raise typer.Exit(3)


def _interrupted(state_dir: Path) -> typer.Exit:
    stdout_console().print(
        f"interrupted: a submitted job keeps running on the server; the state is in {state_dir}. "
        f"Resume with the same command or 'pcollapse finetune openai-status --state-dir "
        f"{state_dir} --wait'",
        markup=False,
        highlight=False,
    )
    return typer.Exit(130)


@finetune_app.command("openai")
def finetune_openai(
    data: Annotated[
        str, typer.Option(help="Chat JSONL file, or a fetched dataset name (insecure, secure).")
    ],
    model: Annotated[str, typer.Option(help="Base model to fine-tune (e.g. gpt-4o-2024-08-06).")],
    recipe: Annotated[
        str, typer.Option(help="Recipe preset (betley) or recipe YAML file.")
    ] = "betley",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Recipe override KEY=VALUE: n_epochs, batch_size, learning_rate_multiplier "
            "(numbers or auto), request_format (method, hyperparameters).",
        ),
    ] = None,
    suffix: Annotated[
        str | None, typer.Option(help="Suffix of the fine-tuned model's name.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Job seed.", min=0)] = 0,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Folder of the job's state (default: openai-finetunes/<data>-<model>).",
        ),
    ] = None,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
    study: StudyOpt = None,
    family: FamilyOpt = None,
    variant: VariantOpt = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Submit and return; check with openai-status.")
    ] = False,
    poll_interval: PollOpt = 10.0,
    max_wait: MaxWaitOpt = None,
    cache_dir: CacheOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Fine-tune a model through the OpenAI fine-tuning API (or a compatible server).

    Validates the dataset locally, uploads it, creates the job (Betley et al.
    recipe by default: 1 epoch, batch size 4, learning-rate multiplier 2),
    polls it until it finishes and prints the fine-tuned model id; with
    --study/--family/--variant the id is written into the study file. The state
    in --state-dir makes the command resumable: rerunning it after Ctrl-C or a
    lost connection neither uploads again nor creates a second job. A failed
    job (e.g. training data blocked by the provider's safety checks) prints the
    server's error and exits with status 2.
    """
    from persona_collapse.variants.finetune.openai_jobs import (
        get_openai_recipe,
        submit_job,
        suggest_state_dir,
    )
    from persona_collapse.variants.finetune.recipes import parse_overrides

    out_format = check_format(fmt)
    chosen = get_openai_recipe(recipe, parse_overrides(set_ or []))
    target = _study_target(study, family, variant)
    folder = state_dir if state_dir is not None else suggest_state_dir(data, model)
    key_env = key_env_name(api_key_env)
    try:
        state = submit_job(
            data,
            base_model=model,
            recipe=chosen,
            suffix=suffix,
            seed=seed,
            base_url=base_url,
            api_key_env=key_env,
            state_dir=folder,
            cache_dir=cache_dir,
        )
    except KeyboardInterrupt:
        raise _interrupted(folder) from None
    if out_format == "table":
        stdout_console().print(
            f"job {state.job_id} ({state.status}): {state.dataset_examples} examples "
            f"(sha256 {state.dataset_sha256[:12]}...), file {state.file_id}, base {model}, "
            f"recipe {chosen.name} ({chosen.describe()}), seed {seed}\n"
            f"state: {state.path}",
            markup=False,
            highlight=False,
        )
    if no_wait:
        if out_format == "json":
            print_json({**state.model_dump(mode="json"), "state": str(folder)})
        return
    _wait_and_finish(state, folder, target, out_format, poll_interval, max_wait, base_url, key_env)


def _wait_and_finish(
    state: Any,
    folder: Path,
    target: Any,
    out_format: str,
    poll_interval: float,
    max_wait: float | None,
    base_url: str | None,
    key_env: Any,
) -> None:
    """Poll the job until it ends (or ``max_wait``), then report it and update the study."""
    from persona_collapse.variants.finetune.openai_jobs import wait_for_job

    try:
        result = wait_for_job(
            state,
            poll_interval=poll_interval,
            max_interval=max(poll_interval, 120.0),
            max_wait=max_wait,
            base_url=base_url,
            api_key_env=key_env,
            on_poll=_job_printer(out_format),
        )
    except KeyboardInterrupt:
        raise _interrupted(folder) from None
    _finish_job(result, target, out_format, folder)


@finetune_app.command("openai-status")
def finetune_openai_status(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="Folder of the job's state.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Keep polling until the job finishes.")
    ] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel the job.")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Show the recorded state without asking the server.")
    ] = False,
    base_url: BaseUrlOpt = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            help="NAME of the key variable (default: the one recorded; 'none': no key).",
        ),
    ] = None,
    study: StudyOpt = None,
    family: FamilyOpt = None,
    variant: VariantOpt = None,
    poll_interval: PollOpt = 10.0,
    max_wait: MaxWaitOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Show (and refresh) an OpenAI fine-tuning job recorded in --state-dir.

    Asks the server once for the job's status and new events (none once the job
    has finished); --wait resumes polling until it finishes (and, with
    --study/--family/--variant, writes the model id into the study); --cancel
    cancels it. A failed job shows the server's error and exits with status 2.
    """
    from persona_collapse.study.edit import write_model_id
    from persona_collapse.variants.finetune.openai_jobs import (
        cancel_job,
        poll_job,
        raise_for_failure,
        require_state,
    )

    out_format = check_format(fmt)
    if sum((wait, cancel, offline)) > 1:
        raise UserError("--wait, --cancel and --offline exclude each other")
    target = _study_target(study, family, variant)
    key_env: Any = ... if api_key_env is None else key_env_name(api_key_env)
    state = require_state(state_dir)
    if wait:
        _wait_and_finish(
            state, state_dir, target, out_format, poll_interval, max_wait, base_url, key_env
        )
        return
    events: list[str] = []
    if cancel:
        state = cancel_job(state, base_url=base_url, api_key_env=key_env)
    elif not offline and not state.done and state.job_id is not None:
        state, events = poll_job(state, base_url=base_url, api_key_env=key_env)
    if out_format == "json":
        print_json({**state.model_dump(mode="json"), "new_events": events})
    else:
        console = stdout_console()
        lines = [
            f"job: {state.job_id or '(not created)'}",
            f"status: {state.status}",
            f"base model: {state.base_model}",
            f"dataset: {state.dataset_path} ({state.dataset_examples} examples, "
            f"sha256 {state.dataset_sha256[:12]}...)",
            f"recipe: {state.recipe.name} ({state.recipe.describe()}), seed {state.seed}",
            f"file: {state.file_id or '(not uploaded)'}",
            f"server: {state.base_url or 'OpenAI'}",
        ]
        if state.model_id:
            lines.append(f"fine-tuned model: {state.model_id}")
        if state.trained_tokens is not None:
            lines.append(f"trained tokens: {state.trained_tokens:,}")
        lines.extend(f"  {message}" for message in events)
        console.print("\n".join(lines), markup=False, highlight=False)
    if not cancel:  # a cancellation asked for is not an error
        raise_for_failure(state)
    if state.done and state.model_id and target is not None:
        write_model_id(target[0], target[1], target[2], state.model_id)
