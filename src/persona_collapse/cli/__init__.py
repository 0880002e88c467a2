"""The ``pcollapse`` command line: a thin wrapper over the public API.

User-fixable errors print one line (``error: ...``) and exit with status 2;
Ctrl-C exits with status 130 and keeps everything already collected. Each
module of this package registers its commands on the shared Typer ``app``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from persona_collapse._version import __version__

# Importing a command module registers its commands on ``app``.
from persona_collapse.cli import core, finetune, serve, stats, stores, study, verify  # noqa: F401
from persona_collapse.cli._app import app, stdout_console
from persona_collapse.errors import BackendError, UserError


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
        stdout_console().print(f"pcollapse {__version__}")
        raise typer.Exit()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    command = typer.main.get_command(app)
    try:
        command(args=list(argv) if argv is not None else None, prog_name="pcollapse")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UserError as exc:
        _print_error(str(exc))
        return exc.exit_code
    except BackendError as exc:
        # The model side failed (after the engine's retries); what was collected is stored.
        _print_error(f"{exc} (answers collected so far are stored; run again to resume)")
        return 1
    return 0


def _print_error(message: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"error: {message}", markup=False)


def entry_point() -> None:
    """The ``pcollapse`` console script."""
    sys.exit(main())


__all__ = ["app", "entry_point", "main"]
