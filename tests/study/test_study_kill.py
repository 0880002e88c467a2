"""`pcollapse study run` killed (SIGKILL) mid-collection resumes to the uninterrupted result."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from persona_collapse.store.sqlite import RunStore
from persona_collapse.study import collect_study, load_study, study_status

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

SRC = Path(__file__).resolve().parents[2] / "src"


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # schema not created yet


def _command(study: Path) -> list[str]:
    return [sys.executable, "-m", "persona_collapse.cli", "study", "run", str(study),
            "--no-progress", "--no-figures"]  # fmt: skip


def _kill_after(study: Path, db: Path, threshold: int, timeout: float = 60.0) -> bool:
    """Start the study, SIGKILL it once ``threshold`` answers are stored; True if killed."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(_command(study), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _stored(db) >= threshold:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return True
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return False


def _ratings(db: Path) -> dict[str, pd.DataFrame]:
    with RunStore.open(db, create=False) as store:
        return {
            r.name: store.ratings_frame(r.run_id)[["persona_id", "item_id", "repetition", "rating"]]
            for r in store.list_runs()
        }


def test_killed_study_resumes_without_duplicates(
    tmp_path: Path, study_writer: Callable[..., Path]
) -> None:
    study_path = study_writer(tmp_path / "killed", personas=30, repetitions=4)
    db = tmp_path / "killed" / "out" / "runs.db"
    kills = sum(_kill_after(study_path, db, threshold) for threshold in (1500, 6000))
    assert kills >= 1, "the study finished before it could be killed"
    assert _stored(db) < sum(r.run.planned or 0 for r in study_status(load_study(study_path)))

    done = subprocess.run(
        _command(study_path), env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "killed" / "out" / "metrics.csv").is_file()
    rows = study_status(load_study(study_path))
    assert all(r.complete and r.stored == r.run.planned for r in rows)
    with sqlite3.connect(db) as conn:
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT run_id || ':' || persona_id || ':' || item_id || "
            "':' || repetition) FROM ratings"
        ).fetchone()
    assert total == distinct == sum(r.stored for r in rows)

    # The same study collected without interruption stores the same answers.
    clean_path = study_writer(tmp_path / "clean", personas=30, repetitions=4)
    collect_study(load_study(clean_path), progress=False)
    resumed, clean = _ratings(db), _ratings(tmp_path / "clean" / "out" / "runs.db")
    assert resumed.keys() == clean.keys()
    for name in clean:
        pd.testing.assert_frame_equal(resumed[name], clean[name], check_dtype=False)
