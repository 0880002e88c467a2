"""``pcollapse metrics`` on CSV files loads neither pandas nor the run store (issue 11.8), nor
Typer's help renderer nor the other commands' modules (issue 11: only help screens need
them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HEAVY = (
    "pandas",
    "pyarrow",
    "persona_collapse.store.sqlite",
    "persona_collapse.core.config",
    "typer.rich_utils",
    # Command modules metrics does not use (help and the full app import them all).
    "persona_collapse.cli.instruments",
    "persona_collapse.cli.study",
    "persona_collapse.cli.verify",
    "persona_collapse.cli.watch",
)


def _ratings_file(path: Path, *, personas: int = 4, items: int = 30, reps: int = 3) -> Path:
    rng = np.random.default_rng(7)
    lines = ["persona_id,question_id,run_index,rating,failures,response,collected_at"]
    for p in range(personas):
        for q in range(1, items + 1):
            for r in range(1, reps + 1):
                rating = int(rng.integers(0, 6))
                lines.append(f"{p},{q},{r},{rating},0,{rating},2026-01-01T00:00:{r:02d}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_metrics_command_imports_no_pandas(tmp_path: Path) -> None:
    csv_file = _ratings_file(tmp_path / "run.csv")
    code = (
        "import json, sys\n"
        "from persona_collapse.cli import main\n"
        "status = main(sys.argv[1:])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'status': status, 'heavy': heavy}))\n"
    )
    args = ["metrics", str(csv_file), "--per-foundation", "--persona-boot", "20"]
    for fmt in ("table", "json"):
        out = subprocess.run(
            [sys.executable, "-c", code, *args, "--rerun-boot", "5", "--format", fmt],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result == {"status": 0, "heavy": []}, out.stderr


def test_a_command_run_is_the_only_one_converted() -> None:
    """``main`` hands typer only the command (or group) it runs, with the same options."""
    import typer

    from persona_collapse.cli import _app_for, app

    full = typer.main.get_command(app)
    assert isinstance(full, typer.core.TyperGroup)
    for name, command in full.commands.items():
        alone = typer.main.get_command(_app_for(["-v", name, "--help"]))
        assert isinstance(alone, typer.core.TyperGroup)
        assert list(alone.commands) == [name]
        assert [p.name for p in alone.commands[name].params] == [p.name for p in command.params]
    for args in ([], ["--help"], ["--version"], ["metrcs"]):
        assert _app_for(args) is app


def test_metrics_help_is_unchanged_by_the_shortcut(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from persona_collapse.cli import app, main

    assert main(["metrics", "--help"]) == 0
    alone = capsys.readouterr().out
    with pytest.raises(SystemExit):
        typer.main.get_command(app)(["metrics", "--help"], prog_name="pcollapse")
    assert capsys.readouterr().out == alone


def test_every_command_is_mapped_to_the_modules_that_register_it() -> None:
    """A command run imports only the modules the map names: they must register it whole."""
    from persona_collapse.cli import _GROUP_MODULES, _MODULES_OF, app

    prefix = "persona_collapse.cli."
    names = set()
    for info in app.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__.replace("_", "-")
        names.add(name)
        assert info.callback.__module__.removeprefix(prefix) in _MODULES_OF[name], name
    for group in app.registered_groups:
        assert group.name is not None and group.typer_instance is not None
        names.add(group.name)
        modules = {c.callback.__module__ for c in group.typer_instance.registered_commands}
        assert {m.removeprefix(prefix) for m in modules} <= set(_MODULES_OF[group.name])
        assert _GROUP_MODULES[group.name] in _MODULES_OF[group.name]
    assert names == set(_MODULES_OF)


def test_help_lists_the_commands_alike_whatever_ran_before() -> None:
    """Commands run first import their own modules first; the full help keeps its order."""
    code = (
        "import contextlib, io, sys\n"
        "from persona_collapse.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for first in sys.argv[1:]:\n"
        "        assert main([first, '--help']) == 0\n"
        "import persona_collapse.cli.instruments\n"
        "assert main(['--help']) == 0\n"
    )
    env = {**os.environ, "COLUMNS": "100"}
    screens = {
        subprocess.run(
            [sys.executable, "-c", code, *first],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        for first in ([], ["watch", "metrics", "study"], ["verify", "datasets"])
    }
    assert len(screens) == 1
    assert "compare-instruments" in screens.pop()
