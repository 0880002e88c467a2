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

# Importing a command module registers its commands on ``app``.
from persona_collapse.cli import (  # noqa: F401
    controls,
    core,
    finetune,
    geometry,
    instruments,
    serve,
    stats,
    stores,
    study,
    trajectory,
    verify,
    watch,
)
from persona_collapse.cli._app import HelpOpt, app, backend_failure, stdout_console
from persona_collapse.core.errors import BackendError, UserError
from persona_collapse.core.version import __version__


@app.callback(invoke_without_command=True, add_help_option=False)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    show_help: HelpOpt = False,
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
        return backend_failure(exc)
    return 0


def _print_error(message: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"error: {message}", markup=False)


def entry_point() -> None:
    """The ``pcollapse`` console script."""
    sys.exit(main())


__all__ = ["app", "entry_point", "main"]
