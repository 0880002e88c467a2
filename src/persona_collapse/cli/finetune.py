"""Producing variants: chat datasets (``pcollapse datasets``), LoRA fine-tuning (``finetune``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from persona_collapse.cli._app import (
    FormatOpt,
    app,
    check_format,
    interruptible,
    print_json,
    stdout_console,
)
from persona_collapse.errors import ConfigError, MissingDependencyError, UserError

datasets_app = typer.Typer(
    help="Chat-format JSONL datasets: fetch, validate, describe, split.",
    no_args_is_help=True,
)
finetune_app = typer.Typer(help="Fine-tune model variants.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(finetune_app, name="finetune")

DataFile = Annotated[Path, typer.Argument(help="Chat-format JSONL file.")]
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
        str | None, typer.Option("--sha256", help="Refuse a download with another checksum.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download even if cached.")] = False,
    fmt: FormatOpt = "table",
) -> None:
    """Download a public dataset into the cache and record its checksum (uses the network)."""
    from persona_collapse.finetune.datasets import fetch_dataset

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
    files: Annotated[list[Path], typer.Argument(help="Chat-format JSONL files.")],
) -> None:
    """Check files line by line; the first problem is reported with its line number."""
    from persona_collapse.finetune.datasets import read_chat_jsonl

    for path in files:
        dataset = read_chat_jsonl(path)
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
    fmt: FormatOpt = "table",
) -> None:
    """Examples, turns, and character (and token) lengths of a dataset."""
    from persona_collapse.finetune.datasets import dataset_stats, read_chat_jsonl

    out_format = check_format(fmt)
    if max_length is not None and model is None:
        raise UserError("--max-length needs --model (token lengths need the model's tokenizer)")
    dataset = read_chat_jsonl(file)
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
    from persona_collapse.finetune.datasets import (
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
    from persona_collapse.finetune.datasets import resolve_dataset
    from persona_collapse.finetune.lora import train_lora
    from persona_collapse.finetune.recipes import get_recipe, parse_overrides

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
