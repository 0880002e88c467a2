"""The ``pcollapse`` command line: a thin wrapper over the public API.

User-fixable errors print one line (``error: ...``) and exit with status 2;
Ctrl-C exits with status 130 and keeps everything already collected. Each
module of this package registers its commands on the shared Typer ``app``
(``persona_collapse.cli.app`` has them all); a command run imports only the
modules its command needs.
"""

from __future__ import annotations

import copy
import gc
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from persona_collapse.cli import _app
from persona_collapse.cli._app import (
    HelpOpt,
    backend_failure,
    keep_option_names_whole,
    stdout_console,
)
from persona_collapse.core.errors import BackendError, UserError
from persona_collapse.core.version import __version__

# Importing a command module registers its commands on ``app``. Importing all of them
# costs ~10 ms CPU; `pcollapse metrics` needs a third of that.
_COMMAND_MODULES = (
    "controls",
    "core",
    "finetune",
    "geometry",
    "instruments",
    "sensitivity",
    "serve",
    "stats",
    "stores",
    "study",
    "trajectory",
    "verify",
    "watch",
)
# Which modules register each command or group (a group: its own and its subcommands').
_MODULES_OF: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("metrics", "compare", "profile", "import", "export", "runs", "backends", "run", "demo"),
        ("core",),
    ),
    "datasets": ("finetune", "controls"),
    "finetune": ("finetune",),
    "geometry": ("geometry",),
    "compare-instruments": ("instruments",),
    "sensitivity": ("sensitivity",),
    "serve-sim": ("serve",),
    "audit": ("stats",),
    "plan": ("stats",),
    "store": ("stores",),
    "reproduce": ("study",),
    "study": ("study",),
    "trajectory": ("trajectory",),
    "verify": ("verify",),
    "watch": ("watch",),
}
# The module that adds each group to ``app`` (for the order of a full import).
_GROUP_MODULES = {
    "datasets": "finetune",
    "finetune": "finetune",
    "store": "stores",
    "study": "study",
}


def _import_commands(modules: Sequence[str]) -> None:
    for module in modules:
        importlib.import_module(f"{__name__}.{module}")


def _full_app() -> typer.Typer:
    """``app`` with every command, listed (help) in the order a full import registers them.

    Commands register in the order their modules are first imported; a command run
    may have imported its own module (or a test a module) before the others.
    """
    _import_commands(_COMMAND_MODULES)
    rank = {f"{__name__}.{m}": i for i, m in enumerate(_COMMAND_MODULES)}
    last = len(rank)
    _app.app.registered_commands.sort(
        key=lambda info: rank.get(getattr(info.callback, "__module__", ""), last)
    )
    _app.app.registered_groups.sort(
        key=lambda info: rank.get(f"{__name__}.{_GROUP_MODULES.get(info.name or '', '')}", last)
    )
    return _app.app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the complete application (tests, embedding)
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@_app.app.callback(invoke_without_command=True, add_help_option=False)
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
    args = list(argv) if argv is not None else sys.argv[1:]
    # A command allocates many short-lived objects (option parsers, result and table
    # objects) and few reference cycles: the default cycle collection every 700
    # allocations costs about 5 % of `pcollapse metrics` and frees almost nothing.
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], _GC_THRESHOLD), *threshold[1:])
    keep_option_names_whole()
    command = typer.main.get_command(_app_for(args))
    try:
        command(args=args, prog_name="pcollapse")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UserError as exc:
        _print_error(str(exc))
        return exc.exit_code
    except BackendError as exc:
        return backend_failure(exc)
    finally:
        gc.set_threshold(*threshold)
    return 0


_GC_THRESHOLD = 200_000


def _app_for(args: Sequence[str]) -> typer.Typer:
    """``app``, or a copy of it holding only the command or group that ``args`` run.

    Turning a command into its click form inspects its signature; doing that for
    the one command run, not for all of them, saves most of the start-up time of
    ``pcollapse metrics``. Only the modules registering that command are imported.
    Help screens, the root options (``--version``, ``-v``) and names that are not a
    command (typos: click suggests the right one) get the full ``app``.
    """
    name = next((a for a in args if not a.startswith("-")), None)
    if name not in _MODULES_OF:
        return _full_app()
    _import_commands(_MODULES_OF[name])
    app = _app.app
    commands = [
        info
        for info in app.registered_commands
        if info.callback is not None
        and (info.name or typer.main.get_command_name(info.callback.__name__)) == name
    ]
    groups = [
        info
        for info in app.registered_groups
        if (info.name or (info.typer_instance.info.name if info.typer_instance else None)) == name
    ]
    if len(commands) + len(groups) != 1:
        return _full_app()
    only = copy.copy(app)
    only.registered_commands = commands
    only.registered_groups = groups
    return only


def _print_error(message: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(f"error: {message}", markup=False)


def entry_point() -> None:
    """The ``pcollapse`` console script."""
    code = main()
    # The process ends here: spare the interpreter's final cyclic collections over
    # everything the command loaded (~0.07 s of `pcollapse metrics`, a tenth of it).
    # Exit handlers, stream flushes and module teardown still run; only objects the
    # collector would free in cycles are left to the OS with the rest of the memory.
    gc.freeze()
    sys.exit(code)


__all__ = ["app", "entry_point", "main"]
