"""``pcollapse metrics`` on CSV files loads neither pandas nor the run store (issue 11.8), nor
Typer's help renderer (issue 11: only help screens need it), nor pydantic (no configuration
is read; pyproject keeps Typer below 0.29, which parses options with pydantic)."""

from __future__ import annotations

import json
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
    "pydantic",
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
