"""Helpers of the kill-and-resume drills: a collecting child process and a store peek."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def stored_slots(path: Path, table: str = "ratings") -> int:
    """Accepted slots in the store, read without interfering with the writer (0 if none yet).

    ``table`` is the slots' table (``control_answers`` for a control store).
    """
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def start_child(code: str, *args: str) -> subprocess.Popen[bytes]:
    """Run ``python -c code args...`` with this checkout's ``src`` importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
