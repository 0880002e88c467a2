"""Check a store file's pages, and save the answers still readable from a damaged one.

A store whose pages are damaged (a failing disk, a copy cut short, a tool that
wrote into the file) makes SQLite report "database disk image is malformed" as
soon as a query touches a bad page. :func:`integrity_problems` runs SQLite's own
check; :func:`salvage_ratings` reads the ``ratings`` table in row-id ranges,
splitting every range that fails until the unreadable rows are isolated, so
every row on a sound page is saved.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from persona_collapse.core.csvio import write_csv_atomic
from persona_collapse.core.errors import InputFileError, StoreError
from persona_collapse.store.reference_csv import write_ratings_csv

logger = logging.getLogger(__name__)

_RATING_COLUMNS = (
    "run_id",
    "persona_id",
    "item_id",
    "repetition",
    "seq",
    "rating",
    "failures",
    "response",
    "collected_at",
)
# NOT INDEXED: walk the table's own b-tree by row id, not an index that may be damaged too.
_RANGE_QUERY = (
    f"SELECT {', '.join(_RATING_COLUMNS)} FROM ratings NOT INDEXED "
    "WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
)


@dataclass(frozen=True)
class SalvageResult:
    """What :func:`salvage_ratings` saved.

    Attributes:
        path: The CSV file written.
        rows: Rating rows written.
        unreadable: Row-id ranges ``(first, last)`` that could not be read.
        runs_known: Whether run names could be read (else runs are named ``run-<id>``).
    """

    path: Path
    rows: int
    unreadable: tuple[tuple[int, int], ...]
    runs_known: bool


def _connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` read-only: a damaged file must not be written to."""
    if not path.is_file():
        raise InputFileError(path, "run store not found")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store ({exc})") from None


def integrity_problems(path: str | os.PathLike[str], *, limit: int = 100) -> list[str]:
    """Problems ``PRAGMA integrity_check`` finds in a store file (empty when it is sound).

    Raises:
        InputFileError: The file does not exist.
    """
    file = Path(path)
    conn = _connect(file)
    try:
        rows = conn.execute(f"PRAGMA integrity_check({int(limit)})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()
    messages = [str(r[0]) for r in rows]
    return [] if messages == ["ok"] else messages


def _run_names(conn: sqlite3.Connection) -> dict[int, tuple[str, str]] | None:
    """run_id -> (name, kind), or None when the runs table cannot be read."""
    try:
        rows = conn.execute("SELECT run_id, name, kind FROM runs").fetchall()
    except sqlite3.DatabaseError as exc:
        logger.warning("runs table unreadable (%s); runs are named by id", exc)
        return None
    return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}


def _row_id_bounds(conn: sqlite3.Connection) -> tuple[int, int]:
    try:
        lo, hi = conn.execute("SELECT min(rowid), max(rowid) FROM ratings").fetchone()
        if lo is None:
            return 1, 0
        return int(lo), int(hi)
    except sqlite3.DatabaseError:
        # The rightmost pages are damaged: no row can have a larger id than the
        # file has room for rows (a row takes well over 8 bytes).
        pages, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size")
        )
        return 1, max(int(pages) * int(size) // 8, 1)


def _read_ranges(
    conn: sqlite3.Connection, lo: int, hi: int
) -> tuple[list[tuple[Any, ...]], list[tuple[int, int]]]:
    """Rows with row ids in [lo, hi], splitting failing ranges; and the unreadable ranges."""
    rows: list[tuple[Any, ...]] = []
    lost: list[tuple[int, int]] = []
    pending = [(lo, hi)] if lo <= hi else []
    while pending:
        a, b = pending.pop()
        try:
            rows.extend(conn.execute(_RANGE_QUERY, (a, b)).fetchall())
        except sqlite3.DatabaseError:
            if a == b:
                if lost and lost[-1][0] == b + 1:
                    lost[-1] = (a, lost[-1][1])
                else:
                    lost.append((a, b))
                continue
            mid = (a + b) // 2
            pending.append((a, mid))  # popped second: ranges are read in descending order
            pending.append((mid + 1, b))
    rows.sort(key=lambda r: tuple(-1 if v is None else v for v in r[:5]))
    lost.sort()
    return rows, lost


def _valid(row: Sequence[Any]) -> bool:
    """A damaged cell can read back as the wrong type; keep only well-formed rows."""
    return all(isinstance(v, int) for v in row[:7]) and all(
        v is None or isinstance(v, str) for v in row[7:]
    )


def salvage_ratings(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    run: str | None = None,
    raw_csv: bool = False,
) -> SalvageResult:
    """Write every readable rating row of a (damaged) store to a CSV file.

    With ``run``, the file has that run's rows in the reference layout (``pcollapse
    import`` reads it back). Without, it has every run's rows and a leading ``run``
    column.

    Raises:
        InputFileError: The store does not exist, or the CSV cannot be written.
        StoreError: No ratings can be read at all, or ``run`` is not a readable run.
    """
    file = Path(path)
    conn = _connect(file)
    try:
        names = _run_names(conn)
        try:
            lo, hi = _row_id_bounds(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{file}: no ratings can be read ({exc})") from None
        rows, lost = _read_ranges(conn, lo, hi)
    finally:
        conn.close()
    bad = [r for r in rows if not _valid(r)]
    rows = [r for r in rows if _valid(r)]
    if bad:
        logger.warning("%s: %d damaged row(s) left out", file, len(bad))
    frame = pd.DataFrame(rows, columns=list(_RATING_COLUMNS))
    for column in _RATING_COLUMNS[:7]:
        frame[column] = frame[column].astype(np.int64)
    label = {rid: v[0] for rid, v in (names or {}).items()}
    frame.insert(0, "run", [label.get(int(r), f"run-{int(r)}") for r in frame["run_id"]])
    if run is not None:
        matches = [rid for rid, (n, _) in (names or {}).items() if run in (n, str(rid))]
        if not matches:
            known = ", ".join(sorted(v[0] for v in (names or {}).values())) or "(none readable)"
            raise StoreError(f"{file}: no readable run {run!r}; readable runs: {known}")
        rid = matches[0]
        one = frame[frame["run_id"] == rid].drop(columns=["run", "run_id", "seq"])
        one.attrs["kind"] = (names or {})[rid][1]
        out = write_ratings_csv(one, dest, raw=raw_csv)
        written = len(one)
    else:
        table = frame.drop(columns=["run_id"]).rename(
            columns={"item_id": "question_id", "repetition": "run_index"}
        )
        out = write_csv_atomic(table, dest, raw=raw_csv)
        written = len(table)
    return SalvageResult(out, written, tuple(lost), names is not None)
