"""Read control-task CSVs in the layout of the follow-up studies (capability and lookup runs).

Capability files (``*_mmlu.csv``, ``*_gsm8k.csv``) hold one row per (item, repetition):
``item_id, run_index, answer, gold, correct, format_valid, failures, response,
collected_at[, subject]``; ``answer`` is empty when the reply did not parse and
``format_valid`` is blank when no reply came. Lookup files hold ``table_id, run_index,
target_persona, correct_id, rating, correct, ...`` with ``rating = -1`` for an
unparseable reply. The readers keep only the columns the statistics need, as arrays.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from persona_collapse.core.errors import InputFileError

if TYPE_CHECKING:  # core.controls builds pydantic models: `pcollapse metrics` only reads headers
    from persona_collapse.core.controls import TaskName

ControlKind = Literal["capability", "lookup"]

CAPABILITY_COLUMNS = ("item_id", "run_index", "answer", "gold", "correct", "format_valid")
LOOKUP_COLUMNS = ("table_id", "run_index", "target_persona", "correct_id", "rating", "correct")


@dataclass(frozen=True)
class CapabilityRun:
    """A capability run's rows.

    Attributes:
        name: Run name (the file stem).
        task: ``mmlu`` or ``gsm8k``.
        source: The file read.
        item_id: ``(N,)`` item of each row.
        run_index: ``(N,)`` repetition number.
        answer: ``(N,)`` parsed answers as text (``""`` = unparseable).
        correct: ``(N,)`` 1.0 / 0.0.
        replied: ``(N,)`` True where a reply came (``format_valid`` not blank).
        subject: ``(N,)`` stratum of each row (``""`` when the file has no subject).
    """

    name: str
    task: TaskName
    source: Path
    item_id: NDArray[np.int64]
    run_index: NDArray[np.int64]
    answer: NDArray[np.str_]
    correct: NDArray[np.float64]
    replied: NDArray[np.bool_]
    subject: NDArray[np.str_]

    @property
    def valid(self) -> NDArray[np.bool_]:
        """Rows whose answer parsed (non-empty)."""
        return np.char.str_len(self.answer) > 0


@dataclass(frozen=True)
class LookupRun:
    """A lookup run's rows: ``rating`` is ``-1`` where the reply did not parse."""

    name: str
    source: Path
    table_id: NDArray[np.int64]
    run_index: NDArray[np.int64]
    target: NDArray[np.str_]
    correct_id: NDArray[np.int64]
    rating: NDArray[np.int64]
    table_json: NDArray[np.str_]

    @property
    def valid(self) -> NDArray[np.bool_]:
        """Rows with a rating 0-5."""
        return (self.rating >= 0) & (self.rating <= 5)


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputFileError(path, f"cannot read ({exc})", line=1) from None


def detect_control_kind(path: str | Path) -> ControlKind | None:
    """``capability`` or ``lookup`` when the CSV's header has that layout's columns, else None."""
    p = Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return None
    try:
        header = set(_header(p))
    except InputFileError:
        return None  # not a readable CSV: the persona-run reader explains what it is
    if header.issuperset(CAPABILITY_COLUMNS):
        return "capability"
    if header.issuperset(LOOKUP_COLUMNS):
        return "lookup"
    return None


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise InputFileError(
                    path, f"missing column(s) {', '.join(missing)}; expected {', '.join(required)}"
                )
            start = 2
            try:
                for row in reader:
                    yield start, row
                    start = reader.line_num + 1
            except csv.Error as exc:
                raise InputFileError(path, f"malformed CSV ({exc})", line=reader.line_num) from None
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not UTF-8 text ({exc.reason})") from None


def _int(path: Path, line: int, column: str, text: str | None) -> int:
    try:
        value = float((text or "").strip())
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise InputFileError(
            path, f"column {column!r}: expected an integer, got {text!r}", line=line
        )
    return int(value)


def _flag(path: Path, line: int, column: str, text: str | None, *, blank: bool = False) -> int:
    stripped = (text or "").strip()
    if blank and stripped == "":
        return -1
    if stripped in ("0", "1", "0.0", "1.0", "True", "False"):
        return int(stripped in ("1", "1.0", "True"))
    raise InputFileError(path, f"column {column!r}: expected 0 or 1, got {text!r}", line=line)


def read_capability_csv(path: str | Path, *, task: TaskName | None = None) -> CapabilityRun:
    """Read a capability CSV.

    Args:
        path: The file.
        task: ``mmlu`` or ``gsm8k``; by default from the file-name suffix.

    Raises:
        InputFileError: Unreadable file, missing column, or a bad cell (named with its line).
    """
    p = Path(path)
    from persona_collapse.core.controls import task_from_name

    resolved = task or task_from_name(p.name)
    if resolved is None:
        raise InputFileError(
            p, "cannot tell the task: name the file *_mmlu.csv or *_gsm8k.csv, or pass --task"
        )
    items: list[int] = []
    reps: list[int] = []
    answers: list[str] = []
    correct: list[int] = []
    replied: list[bool] = []
    subjects: list[str] = []
    for line, row in _rows(p, CAPABILITY_COLUMNS):
        items.append(_int(p, line, "item_id", row["item_id"]))
        reps.append(_int(p, line, "run_index", row["run_index"]))
        answers.append((row["answer"] or "").strip())
        correct.append(_flag(p, line, "correct", row["correct"]))
        replied.append(_flag(p, line, "format_valid", row["format_valid"], blank=True) >= 0)
        subjects.append((row.get("subject") or "").strip())
    if not items:
        raise InputFileError(p, "no data rows")
    return CapabilityRun(
        name=p.stem,
        task=resolved,
        source=p,
        item_id=np.asarray(items, dtype=np.int64),
        run_index=np.asarray(reps, dtype=np.int64),
        answer=np.asarray(answers, dtype=np.str_),
        correct=np.asarray(correct, dtype=np.float64),
        replied=np.asarray(replied, dtype=np.bool_),
        subject=np.asarray(subjects, dtype=np.str_),
    )


def read_lookup_csv(path: str | Path) -> LookupRun:
    """Read a lookup CSV (see the module docstring); one-line errors name file and line."""
    p = Path(path)
    cols: dict[str, list[int]] = {"table_id": [], "run_index": [], "correct_id": [], "rating": []}
    targets: list[str] = []
    tables: list[str] = []
    for line, row in _rows(p, LOOKUP_COLUMNS):
        for column, values in cols.items():
            values.append(_int(p, line, column, row[column]))
        if not -1 <= cols["rating"][-1] <= 5:
            raise InputFileError(
                p,
                f"column 'rating': expected -1 (no answer) or 0-5, got {row['rating']!r}",
                line=line,
            )
        targets.append((row["target_persona"] or "").strip())
        tables.append(row.get("table_json") or "")
    if not targets:
        raise InputFileError(p, "no data rows")
    return LookupRun(
        name=p.stem,
        source=p,
        table_id=np.asarray(cols["table_id"], dtype=np.int64),
        run_index=np.asarray(cols["run_index"], dtype=np.int64),
        target=np.asarray(targets, dtype=np.str_),
        correct_id=np.asarray(cols["correct_id"], dtype=np.int64),
        rating=np.asarray(cols["rating"], dtype=np.int64),
        table_json=np.asarray(tables, dtype=np.str_),
    )


def run_label(name: str) -> tuple[str, float | None]:
    """Model and temperature from a run name such as ``gpt-4o-secure_temp01_mmlu``."""
    stem = name
    for suffix in ("_mmlu", "_gsm8k", "_lookup"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    model, sep, temp = stem.rpartition("_temp")
    if sep and temp.isdigit():
        return model, int(temp) / 10 ** (len(temp) - 1)
    return stem, None


__all__ = [
    "CAPABILITY_COLUMNS",
    "LOOKUP_COLUMNS",
    "CapabilityRun",
    "ControlKind",
    "LookupRun",
    "detect_control_kind",
    "read_capability_csv",
    "read_lookup_csv",
    "run_label",
]
