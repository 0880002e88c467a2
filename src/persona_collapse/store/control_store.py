"""The control store: one SQLite file holding control-task runs and every reply.

Control runs (capability items, lookup tables) have no persona and no rating scale,
so they live beside the run store in a file of their own kind, with the same
guarantees (WAL, one transaction per request, slot uniqueness):

``control_runs``
    One row per run: name and ``run_key`` (both unique, so
    :meth:`ControlStore.get_or_create_run` is idempotent), task (``mmlu``,
    ``gsm8k``, ``lookup``), model label, backend name and settings (secrets
    stripped), items hash, temperature, repetitions, seed, status.
``control_items``
    The run's items: id, gold answer, subject (stratum), and for lookup the
    target persona and the table as JSON.
``control_answers``
    One row per (item, repetition): the full reply, the parsed answer (``""`` when
    it did not parse), ``format_valid`` and ``correct``. ``UNIQUE(run_id, item_id,
    run_index)``: a slot can never be stored twice, so a resumed run cannot duplicate.
``control_usage``
    Request count and token totals per run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from persona_collapse.core.files import atomic_path
from persona_collapse.core.types import Usage
from persona_collapse.store.base import SQLiteStore
from persona_collapse.store.sqlite import public_settings, utc_now

ControlStatus = Literal["pending", "running", "complete", "interrupted", "failed"]

_SCHEMA = """
CREATE TABLE control_runs (
    run_id            INTEGER PRIMARY KEY,
    run_key           TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL UNIQUE,
    task              TEXT NOT NULL CHECK (task IN ('mmlu', 'gsm8k', 'lookup')),
    model             TEXT NOT NULL,
    backend           TEXT NOT NULL,
    backend_settings  TEXT NOT NULL,
    items_hash        TEXT NOT NULL,
    temperature       REAL NOT NULL,
    n_repetitions     INTEGER NOT NULL CHECK (n_repetitions >= 1),
    seed              INTEGER NOT NULL,
    status            TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE control_items (
    run_id      INTEGER NOT NULL REFERENCES control_runs(run_id) ON DELETE CASCADE,
    item_id     INTEGER NOT NULL,
    gold        TEXT NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    target      TEXT NOT NULL DEFAULT '',
    table_json  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, item_id)
);

CREATE TABLE control_answers (
    run_id        INTEGER NOT NULL REFERENCES control_runs(run_id) ON DELETE CASCADE,
    item_id       INTEGER NOT NULL,
    run_index     INTEGER NOT NULL,
    response      TEXT,
    answer        TEXT NOT NULL,
    format_valid  INTEGER NOT NULL,
    correct       INTEGER NOT NULL,
    collected_at  TEXT NOT NULL,
    UNIQUE (run_id, item_id, run_index)
);

CREATE TABLE control_usage (
    run_id             INTEGER PRIMARY KEY REFERENCES control_runs(run_id) ON DELETE CASCADE,
    requests           INTEGER NOT NULL DEFAULT 0,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0
);
"""

CAPABILITY_HEADER = (
    "item_id",
    "run_index",
    "answer",
    "gold",
    "correct",
    "format_valid",
    "failures",
    "response",
    "collected_at",
    "subject",
)
LOOKUP_HEADER = (
    "table_id",
    "run_index",
    "target_persona",
    "correct_id",
    "rating",
    "correct",
    "failures",
    "response",
    "table_json",
    "collected_at",
)

_RUN_COLUMNS = (
    "run_id, run_key, name, task, model, backend, backend_settings, items_hash, "
    "temperature, n_repetitions, seed, status"
)


@dataclass(frozen=True)
class ControlItemRecord:
    """One item of a control run as stored (lookup tables fill ``target`` and ``table_json``)."""

    item_id: int
    gold: str
    subject: str = ""
    target: str = ""
    table_json: str = ""


@dataclass(frozen=True)
class ControlRunSpec:
    """What defines a control run; equal specs mean the same run (see ``run_key``)."""

    name: str
    task: str
    model: str
    backend: str
    backend_settings: Mapping[str, Any]
    items: tuple[ControlItemRecord, ...]
    temperature: float
    n_repetitions: int
    seed: int

    @property
    def items_hash(self) -> str:
        """SHA-256 of the items (ids, gold answers, subjects)."""
        text = json.dumps([[i.item_id, i.gold, i.subject, i.target] for i in self.items])
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def run_key(self) -> str:
        """Hash of every setting that defines the run."""
        fields = {
            "task": self.task,
            "model": self.model,
            "backend": self.backend,
            "settings": public_settings(self.backend_settings),
            "items": self.items_hash,
            "temperature": self.temperature,
            "n": self.n_repetitions,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ControlRunRecord:
    """A stored control run."""

    run_id: int
    run_key: str
    name: str
    task: str
    model: str
    backend: str
    backend_settings: Mapping[str, Any]
    items_hash: str
    temperature: float
    n_repetitions: int
    seed: int
    status: str


@dataclass(frozen=True)
class ControlAnswer:
    """One stored reply of a control slot (item, repetition)."""

    item_id: int
    run_index: int
    response: str | None
    answer: str
    format_valid: bool
    correct: bool
    collected_at: str = ""


class ControlStore(SQLiteStore):
    """SQLite file of control-task runs (see the module docstring)."""

    KIND = "control store"
    APPLICATION_ID = 0x50434C43  # "PCLC"
    SCHEMA_VERSION = 1
    SCHEMA = _SCHEMA
    EXPECTED_TABLES = frozenset(
        {"control_runs", "control_items", "control_answers", "control_usage"}
    )

    @staticmethod
    def _record(row: Sequence[Any]) -> ControlRunRecord:
        return ControlRunRecord(
            run_id=int(row[0]),
            run_key=str(row[1]),
            name=str(row[2]),
            task=str(row[3]),
            model=str(row[4]),
            backend=str(row[5]),
            backend_settings=json.loads(row[6]),
            items_hash=str(row[7]),
            temperature=float(row[8]),
            n_repetitions=int(row[9]),
            seed=int(row[10]),
            status=str(row[11]),
        )

    def list_runs(self) -> list[ControlRunRecord]:
        """Every control run, oldest first."""
        rows = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM control_runs ORDER BY run_id")
        return [self._record(r) for r in rows]

    def find_run(self, name: str) -> ControlRunRecord | None:
        """The run called ``name``, or None."""
        row = self._conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM control_runs WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else self._record(row)

    def get_or_create_run(self, spec: ControlRunSpec) -> ControlRunRecord:
        """The run of ``spec``, created (with its items) when new.

        Raises:
            StoreError: A run of that name exists with other settings.
        """
        from persona_collapse.core.errors import StoreError

        key = spec.run_key
        existing = self.find_run(spec.name)
        if existing is not None:
            if existing.run_key != key:
                raise StoreError(
                    f"{self.path}: control run {spec.name!r} exists with other settings "
                    "(task, model, items, temperature, repetitions or seed); use another name"
                )
            return existing
        now = utc_now()
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO control_runs (run_key, name, task, model, backend, "
                "backend_settings, items_hash, temperature, n_repetitions, seed, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    key,
                    spec.name,
                    spec.task,
                    spec.model,
                    spec.backend,
                    json.dumps(public_settings(spec.backend_settings), sort_keys=True, default=str),
                    spec.items_hash,
                    float(spec.temperature),
                    int(spec.n_repetitions),
                    int(spec.seed),
                    now,
                    now,
                ),
            )
            run_id = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO control_items (run_id, item_id, gold, subject, target, table_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (run_id, i.item_id, i.gold, i.subject, i.target, i.table_json)
                    for i in spec.items
                ],
            )
            conn.execute("INSERT INTO control_usage (run_id) VALUES (?)", (run_id,))
        found = self.find_run(spec.name)
        assert found is not None  # just inserted in a committed transaction
        return found

    def set_status(self, run_id: int, status: ControlStatus) -> None:
        """Record a run's status."""
        with self._transaction() as conn:
            conn.execute(  # unchanged: no write (the analysis cache is keyed by the bytes)
                "UPDATE control_runs SET status = ?, updated_at = ? WHERE run_id = ? "
                "AND status != ?",
                (status, utc_now(), run_id, status),
            )

    def record(
        self, run_id: int, answers: Iterable[ControlAnswer], *, usage: Usage | None = None
    ) -> int:
        """Store one request's replies and usage in one transaction.

        A slot already stored is kept as it is (``INSERT OR IGNORE``): a resumed run
        can never duplicate or overwrite an answer. Returns the number of rows added.
        """
        now = utc_now()
        rows = [
            (
                run_id,
                a.item_id,
                a.run_index,
                a.response,
                a.answer,
                int(a.format_valid),
                int(a.correct),
                a.collected_at or now,
            )
            for a in answers
        ]
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO control_answers (run_id, item_id, run_index, response, "
                "answer, format_valid, correct, collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = conn.total_changes - before
            if usage is not None:
                conn.execute(
                    "UPDATE control_usage SET requests = requests + 1, "
                    "prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ? "
                    "WHERE run_id = ?",
                    (usage.prompt_tokens, usage.completion_tokens, run_id),
                )
        return int(added)

    def completed_slots(self, run_id: int) -> set[tuple[int, int]]:
        """The (item, repetition) slots already stored."""
        rows = self._conn.execute(
            "SELECT item_id, run_index FROM control_answers WHERE run_id = ?", (run_id,)
        )
        return {(int(i), int(r)) for i, r in rows}

    def items(self, run_id: int) -> list[ControlItemRecord]:
        """The run's items in id order."""
        rows = self._conn.execute(
            "SELECT item_id, gold, subject, target, table_json FROM control_items "
            "WHERE run_id = ? ORDER BY item_id",
            (run_id,),
        )
        return [
            ControlItemRecord(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows
        ]

    def answers(self, run_id: int) -> list[ControlAnswer]:
        """The run's stored replies, by item then repetition."""
        rows = self._conn.execute(
            "SELECT item_id, run_index, response, answer, format_valid, correct, collected_at "
            "FROM control_answers WHERE run_id = ? ORDER BY item_id, run_index",
            (run_id,),
        )
        return [
            ControlAnswer(int(r[0]), int(r[1]), r[2], str(r[3]), bool(r[4]), bool(r[5]), str(r[6]))
            for r in rows
        ]

    def export_csv(self, run_id: int, path: str | os.PathLike[str]) -> Path:
        """Write a run in the reference CSV layout (capability or lookup), atomically.

        Capability: ``item_id, run_index, answer, gold, correct, format_valid,
        failures, response, collected_at, subject``. Lookup: ``table_id, run_index,
        target_persona, correct_id, rating, correct, failures, response, table_json,
        collected_at`` with ``rating = -1`` for an unparseable reply. ``failures`` is
        0 (one request per slot); ``pcollapse metrics`` reads either file back.
        """
        run = next((r for r in self.list_runs() if r.run_id == run_id), None)
        if run is None:
            raise ValueError(f"no control run {run_id}")
        items = {i.item_id: i for i in self.items(run_id)}
        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            if run.task == "lookup":
                writer.writerow(LOOKUP_HEADER)
                for a in self.answers(run_id):
                    it = items[a.item_id]
                    writer.writerow(
                        [
                            a.item_id,
                            a.run_index,
                            it.target,
                            it.gold,
                            a.answer if a.format_valid else -1,
                            int(a.correct),
                            0,
                            a.response or "",
                            it.table_json,
                            a.collected_at,
                        ]
                    )
            else:
                writer.writerow(CAPABILITY_HEADER)
                for a in self.answers(run_id):
                    it = items[a.item_id]
                    writer.writerow(
                        [
                            a.item_id,
                            a.run_index,
                            a.answer,
                            it.gold,
                            int(a.correct),
                            int(a.format_valid),
                            0,
                            a.response or "",
                            a.collected_at,
                            it.subject,
                        ]
                    )
        return Path(path)

    def usage(self, run_id: int) -> tuple[int, Usage]:
        """Request count and token totals of a run."""
        row = self._conn.execute(
            "SELECT requests, prompt_tokens, completion_tokens FROM control_usage WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return 0, Usage()
        return int(row[0]), Usage(int(row[1]), int(row[2]))


__all__ = [
    "CAPABILITY_HEADER",
    "LOOKUP_HEADER",
    "ControlAnswer",
    "ControlItemRecord",
    "ControlRunRecord",
    "ControlRunSpec",
    "ControlStatus",
    "ControlStore",
]
