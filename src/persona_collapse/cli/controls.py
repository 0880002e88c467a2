"""Control tasks on the command line: ``metrics`` on their CSVs, ``datasets control-items``.

The metrics command calls :func:`control_metrics` first; it answers only when every
file given is a control CSV (recognised by its columns) and otherwise leaves the
files to the persona-run path. Heavy imports happen inside the functions so help
screens stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from persona_collapse.cli._app import print_json, stdout_console
from persona_collapse.cli.finetune import datasets_app
from persona_collapse.core.errors import InputFileError, UserError
from persona_collapse.core.formatting import MISSING, fmt_pm

if TYPE_CHECKING:
    from persona_collapse.store.control_csv import ControlKind

TASK_OPTIONS = {"mmlu": 4, "gsm8k": None}
"""Answer-set size per task for the normalised Gini (GSM8K answers are open numbers)."""


def _expand(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise InputFileError(p, "no such file or directory")
        found = sorted(p.rglob("*.csv")) if p.is_dir() else [p]
        files.extend(f for f in found if f not in files)
    return files


def control_files(paths: Sequence[Path]) -> list[tuple[Path, ControlKind]] | None:
    """The control CSVs at ``paths`` with their kind, or None when none is one.

    Raises:
        UserError: Control CSVs mixed with other inputs (persona runs, stores).
    """
    from persona_collapse.store.control_csv import detect_control_kind

    files = _expand(paths)
    kinds = [(f, detect_control_kind(f)) for f in files]
    found = [(f, k) for f, k in kinds if k is not None]
    if not found:
        return None
    other = next((f for f, k in kinds if k is None), None)
    if other is not None:
        raise UserError(
            f"{other}: not a capability or lookup CSV, but {found[0][0]} is; "
            "give control-task files and persona runs to separate metrics commands"
        )
    return found


def _capability_row(
    path: Path, task: str | None, *, n_item_boot: int, n_rep_boot: int, seed: int
) -> dict[str, Any]:
    from persona_collapse.stats.controls import ControlAnswers, capability_metrics, reference_seed
    from persona_collapse.stats.instability import normalised_gini
    from persona_collapse.store.control_csv import read_capability_csv, run_label

    run = read_capability_csv(path, task=task)  # type: ignore[arg-type]
    try:
        m = capability_metrics(
            ControlAnswers.from_run(run),
            n_item_boot=n_item_boot,
            n_rep_boot=n_rep_boot,
            rng=reference_seed(f"{run.name}|{seed}"),
        )
    except ValueError as exc:
        raise InputFileError(path, str(exc)) from None
    model, temperature = run_label(run.name)
    k = TASK_OPTIONS[run.task]
    norm = float(normalised_gini([m.mean_gini], n_options=k)[0]) if k else None
    return {
        "name": run.name,
        "kind": "capability",
        "task": run.task,
        "model": model,
        "temperature": temperature,
        "source": str(path),
        **m.to_dict(),
        "mean_gini_norm": norm,
    }


def _lookup_row(path: Path) -> dict[str, Any]:
    from persona_collapse.stats.controls import lookup_metrics
    from persona_collapse.store.control_csv import read_lookup_csv, run_label

    run = read_lookup_csv(path)
    m = lookup_metrics(run.table_id, run.rating, run.correct_id)
    model, temperature = run_label(run.name)
    row: dict[str, Any] = {
        "name": run.name,
        "kind": "lookup",
        "task": "lookup",
        "model": model,
        "temperature": temperature,
        "source": str(path),
        **m.to_dict(),
    }
    # JSON has no infinity: R of a run whose answers never vary is null plus this flag.
    row["robustness_infinite"] = math.isinf(m.robustness)
    return row


def control_metrics(
    files: Sequence[tuple[Path, ControlKind]],
    *,
    task: str | None,
    out_format: str,
    n_item_boot: int,
    n_rep_boot: int,
    seed: int,
) -> None:
    """Print the metrics of control CSVs: one JSON object per file, or two tables."""
    if task is not None and task not in TASK_OPTIONS:
        raise UserError(f"--task must be 'mmlu' or 'gsm8k', got {task!r}")
    rows = [
        _capability_row(f, task, n_item_boot=n_item_boot, n_rep_boot=n_rep_boot, seed=seed)
        if kind == "capability"
        else _lookup_row(f)
        for f, kind in files
    ]
    if out_format == "json":
        print_json(rows)
        return
    console = stdout_console()
    capability = [r for r in rows if r["kind"] == "capability"]
    lookup = [r for r in rows if r["kind"] == "lookup"]
    if capability:
        table = Table(
            title="Capability controls (accuracy over all rows; SEs: items within subject, "
            "then repetitions)",
            title_justify="left",
        )
        for col in (
            "run",
            "task",
            "items",
            "format-valid",
            "accuracy",
            "acc. (valid)",
            "majority",
            "non-unanimity",
            "Gini",
            "distinct",
        ):
            table.add_column(col, justify="left" if col in ("run", "task") else "right")
        for r in capability:
            table.add_row(
                r["name"],
                r["task"],
                str(r["n_items"]),
                f"{100 * r['format_valid_rate']:.1f} %",
                fmt_pm(r["accuracy_all"], r["accuracy_se"]),
                f"{r['accuracy_valid']:.3f}",
                f"{r['majority_accuracy']:.3f}",
                fmt_pm(r["non_unanimity_rate"], r["non_unanimity_se"]),
                fmt_pm(r["mean_gini"], r["gini_se"], digits=4),
                f"{r['mean_distinct_answers']:.3f}",
            )
        console.print(table)
    if lookup:
        table = Table(title="Lookup controls (within-table R)", title_justify="left")
        for col in ("run", "valid", "accuracy", "uncertainty", "R", "extremization"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for r in lookup:
            rob = r["robustness"]
            table.add_row(
                r["name"],
                f"{r['n_valid']}/{r['n_total']}",
                f"{r['accuracy_all']:.3f}",
                f"{r['uncertainty']:.4f}" if math.isfinite(r["uncertainty"]) else MISSING,
                "∞" if math.isinf(rob) else (f"{rob:.3f}" if math.isfinite(rob) else MISSING),
                f"{r['extremization_all']:+.3f}",
            )
        console.print(table)
        if any(r["robustness_infinite"] for r in lookup):
            console.print("R = ∞: every table's answers agree (within-table uncertainty 0).")


# --- pcollapse datasets control-items -------------------------------------------------------

_TASK_FIELDS = {
    "mmlu": ("question", "subject", "choices", "answer"),
    "gsm8k": ("question", "answer"),
}


@datasets_app.command("control-items")
def datasets_control_items(
    task: Annotated[str, typer.Argument(help="mmlu or gsm8k.")],
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Local files of the public release: Parquet (Hugging Face cais/mmlu 'all' "
            "test split, openai/gsm8k 'main' test split) or JSON Lines with the same fields."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Items JSON file to write.")],
    per_subject: Annotated[int, typer.Option(help="MMLU items per subject.", min=1)] = 4,
    n: Annotated[int, typer.Option("--n", help="GSM8K items.", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the selection.", min=0)] = 1337,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
) -> None:
    """Build a capability items file (the follow-up studies' JSON layout) from local releases.

    MMLU: one seeded generator walks the subjects in sorted order and samples
    --per-subject 4-choice questions of each. GSM8K: --n seeded row indices, sorted; the
    gold answer is the text after the solution's last '####'. Reads no network.
    """
    from persona_collapse.core.controls import (
        TASKS,
        build_gsm8k_items,
        build_mmlu_items,
        items_json,
        read_source_rows,
    )
    from persona_collapse.core.files import write_text_atomic

    if task not in TASKS:
        raise UserError(f"task must be 'mmlu' or 'gsm8k', got {task!r}")
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    rows = read_source_rows(sources, fields=_TASK_FIELDS[task])
    try:
        items = (
            build_mmlu_items(rows, per_subject=per_subject, seed=seed)
            if task == "mmlu"
            else build_gsm8k_items(rows, n=n, seed=seed)
        )
    except ValueError as exc:
        raise UserError(f"{', '.join(map(str, sources))}: {exc}") from None
    write_text_atomic(out, items_json(items))
    stdout_console().print(
        f"{out}: {len(items.items)} {task} items from {len(rows)} rows (seed {seed})",
        markup=False,
        highlight=False,
    )
