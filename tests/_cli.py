"""Running the CLI in-process and checking its one-line user errors (shared by CLI tests)."""

from __future__ import annotations

import pytest

from persona_collapse.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run ``pcollapse ARGS`` in this process: exit status, stdout, stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    """Exit status 2, no traceback, an ``error: ...`` line, and every fragment in it.

    Warnings may come before the error line (it is then the last line); rich may fold
    a long line, so lines are joined before the fragments are matched.
    """
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    assert lines[0].startswith("error: ") or lines[-1].startswith("error: "), err
    joined = " ".join(ln.strip() for ln in lines)
    for fragment in fragments:
        assert fragment in joined, (fragment, joined)


def run_ok(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    """Run ``pcollapse ARGS`` in this process; it must succeed. Returns stdout."""
    code, out, err = run_cli(capsys, *args)
    assert code == 0, (out, err)
    return out


def user_error_line(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    """Run ``pcollapse ARGS``; it must fail with exit status 2 and an ``error: ...`` first
    line, no traceback. Returns the message lines joined (rich may fold a long line)."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    lines = [ln.strip() for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return " ".join(lines)
