"""``pcollapse store check|salvage``: inspect a store file and rescue a damaged one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persona_collapse.cli._app import app, stdout_console
from persona_collapse.core.errors import InputFileError, StoreError, UserError

store_app = typer.Typer(
    help="Check a run store's pages; save the readable answers of a damaged one.",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store", rich_help_panel="Runs and stores")

StoreArg = Annotated[Path, typer.Argument(help="Run store (SQLite file).")]


@store_app.command("check")
def check(store: StoreArg) -> None:
    """Run SQLite's integrity check (PRAGMA integrity_check) on a store file."""
    from persona_collapse.store.salvage import integrity_problems

    problems = integrity_problems(store)
    if not problems:
        stdout_console().print(f"{store}: ok (PRAGMA integrity_check found no problem)")
        return
    console = stdout_console()
    for problem in problems:
        console.print(f"  {problem}", markup=False, highlight=False)
    raise StoreError(
        f"{store}: damaged, PRAGMA integrity_check found {len(problems)} problem(s) "
        f"(listed above); save the answers still readable with "
        f"'pcollapse store salvage {store} OUT.csv'"
    )


@store_app.command("salvage")
def salvage(
    store: StoreArg,
    output: Annotated[Path, typer.Argument(help="CSV file to write.")],
    run: Annotated[
        str | None,
        typer.Option(help="Save only this run, in the reference layout (importable)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")] = False,
    raw_csv: Annotated[
        bool, typer.Option("--raw-csv", help="Write replies without formula neutralisation.")
    ] = False,
) -> None:
    """Save every rating row still readable from a (damaged) store as CSV."""
    from persona_collapse.store.salvage import salvage_ratings

    if output.exists() and not force:
        raise InputFileError(output, "already exists; choose another file or pass --force")
    if output.resolve() == store.resolve():
        raise UserError("the output must not be the store itself")
    result = salvage_ratings(store, output, run=run, raw_csv=raw_csv)
    lost = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in result.unreadable[:10])
    more = "" if len(result.unreadable) <= 10 else f" and {len(result.unreadable) - 10} more"
    console = stdout_console()
    console.print(f"wrote {result.rows} rating rows to {result.path}")
    if result.unreadable:
        console.print(f"unreadable row ids: {lost}{more}")
    if not result.runs_known:
        console.print("run names were unreadable: runs are named run-<id>")
