"""The run store: one SQLite file holding runs, every request attempt and every answer.

Layout (schema version :data:`SCHEMA_VERSION`, recorded in ``PRAGMA user_version``;
``PRAGMA application_id`` marks the file as a persona-collapse store):

``runs``
    One row per run: its label, kind (``persona`` or ``self``), model label,
    backend name and settings (JSON, secrets stripped), instrument (name, content
    hash, JSON), persona-set hash, template hash, temperature, mode, number of
    repetitions, seed, status and source (``collected`` or ``imported:<path>``).
    ``run_key`` (a hash of the settings that define a run) and ``name`` are unique,
    so :meth:`RunStore.get_or_create_run` is idempotent.
``personas``
    The persona texts of a run, by ``persona_id``.
``attempts``
    Every request attempt of every slot: round (request index within the cell),
    attempt number of the slot, request seed, ``max_tokens``, long-form flag,
    response text, parsed rating (NULL if none) and error text.
``ratings``
    Accepted answers, one per slot and ``seq``. ``UNIQUE(run_id, persona_id,
    item_id, repetition, seq)``: collected slots always use ``seq = 0``, so a slot
    can never be accepted twice; imported files keep every row of a slot (retries)
    as ``seq = 0, 1, 2, ...``.
``distributions``
    Exact rating distributions (``exact`` mode), one per persona-item cell.
``usage``
    Request count and token totals per run.

The file uses WAL journaling with ``synchronous=NORMAL``: each
:meth:`RunStore.record` call is one transaction, so a process killed at any point
loses at most the request in flight and never leaves a partial write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import pandas as pd

from persona_collapse.backends.base import Usage
from persona_collapse.core.errors import (
    ConfigError,
    InputFileError,
    MissingDependencyError,
    StoreError,
    UnknownNameError,
    UserError,
)
from persona_collapse.core.files import atomic_path, file_sha256
from persona_collapse.core.frames import DISTRIBUTION_PREFIX, INVALID_RATING
from persona_collapse.core.instrument import Instrument, instrument_from_dict, mfq30
from persona_collapse.core.types import RunMode
from persona_collapse.store.base import SQLiteStore

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the table layout written by this release."""

APPLICATION_ID = 0x50434C50
"""``PRAGMA application_id`` of run stores ("PCLP")."""

RunKind = Literal["persona", "self"]

RunStatus = Literal["pending", "running", "complete", "interrupted", "failed"]

RUN_KINDS: tuple[str, ...] = ("persona", "self")
RUN_MODES: tuple[str, ...] = ("sampling", "exact")
RUN_STATUSES: tuple[str, ...] = ("pending", "running", "complete", "interrupted", "failed")

# Backend-setting keys never written to the store, whatever a backend's describe() says.
_SECRET_MARKERS: tuple[str, ...] = ("key", "token", "secret", "password", "auth", "credential")

_SCHEMA = """
CREATE TABLE runs (
    run_id            INTEGER PRIMARY KEY,
    run_key           TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL CHECK (kind IN ('persona', 'self')),
    model             TEXT NOT NULL,
    backend           TEXT NOT NULL,
    backend_settings  TEXT NOT NULL,
    instrument_name   TEXT NOT NULL,
    instrument_hash   TEXT NOT NULL,
    instrument_json   TEXT NOT NULL,
    persona_set_hash  TEXT NOT NULL,
    template_hash     TEXT NOT NULL,
    temperature       REAL NOT NULL,
    mode              TEXT NOT NULL CHECK (mode IN ('sampling', 'exact')),
    n_repetitions     INTEGER NOT NULL CHECK (n_repetitions >= 1),
    seed              INTEGER NOT NULL,
    status            TEXT NOT NULL,
    source            TEXT NOT NULL,
    metadata          TEXT NOT NULL DEFAULT '{}',
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE personas (
    run_id      INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    persona_id  INTEGER NOT NULL,
    text        TEXT NOT NULL,
    PRIMARY KEY (run_id, persona_id)
);

CREATE TABLE attempts (
    attempt_id  INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    persona_id  INTEGER NOT NULL,
    item_id     INTEGER NOT NULL,
    repetition  INTEGER,
    round       INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    seed        INTEGER,
    max_tokens  INTEGER NOT NULL,
    long_form   INTEGER NOT NULL,
    response    TEXT,
    rating      INTEGER,
    error       TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX attempts_by_slot ON attempts (run_id, persona_id, item_id, repetition);

CREATE TABLE ratings (
    run_id        INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    persona_id    INTEGER NOT NULL,
    item_id       INTEGER NOT NULL,
    repetition    INTEGER NOT NULL,
    seq           INTEGER NOT NULL DEFAULT 0,
    rating        INTEGER NOT NULL,
    failures      INTEGER NOT NULL DEFAULT 0,
    response      TEXT,
    collected_at  TEXT,
    UNIQUE (run_id, persona_id, item_id, repetition, seq)
);

CREATE TABLE distributions (
    run_id      INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    persona_id  INTEGER NOT NULL,
    item_id     INTEGER NOT NULL,
    scale       TEXT NOT NULL,
    probs       TEXT NOT NULL,
    mass        REAL NOT NULL,
    raw         TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (run_id, persona_id, item_id)
);

CREATE TABLE usage (
    run_id             INTEGER PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE,
    requests           INTEGER NOT NULL DEFAULT 0,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    cached_tokens      INTEGER NOT NULL DEFAULT 0
);
"""

_EXPECTED_TABLES = frozenset({"runs", "personas", "attempts", "ratings", "distributions", "usage"})

_RUN_COLUMNS = (
    "run_id, run_key, name, kind, model, backend, backend_settings, instrument_name, "
    "instrument_hash, instrument_json, persona_set_hash, template_hash, temperature, mode, "
    "n_repetitions, seed, status, source, metadata, created_at, updated_at"
)


def utc_now() -> str:
    """Current UTC time as an ISO 8601 string (microseconds), the store's timestamp format."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def persona_set_hash(personas: Sequence[str]) -> str:
    """SHA-256 (hex, 16 chars) of a persona list; ``""`` for no personas (self runs)."""
    if not personas:
        return ""
    raw = json.dumps(list(personas), ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def public_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of backend ``settings`` without secret-looking keys, JSON-normalised.

    Raises:
        ConfigError: A value is not JSON-serialisable.
    """
    clean = {
        str(k): v
        for k, v in settings.items()
        if not any(marker in str(k).lower() for marker in _SECRET_MARKERS)
    }
    try:
        normalised: dict[str, Any] = json.loads(json.dumps(clean, sort_keys=True, default=str))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"backend settings are not JSON-serialisable ({exc})") from None
    return normalised


@dataclass(frozen=True)
class RunSpec:
    """The settings that define a run; equal settings mean the same run (resume).

    Attributes:
        kind: ``"persona"`` (role-play) or ``"self"`` (no persona).
        model: Model label shown in reports.
        backend: Backend name.
        backend_settings: ``Backend.describe()`` output (secret-looking keys are dropped).
        instrument_name, instrument_hash, instrument_json: The instrument and its content.
        persona_set_hash: :func:`persona_set_hash` of the personas (``""`` for self runs).
        template_hash: Hash of the prompt template rendering this instrument.
        temperature: Sampling temperature.
        mode: ``"sampling"`` or ``"exact"`` (rating distributions).
        n_repetitions: Repetitions per persona-item cell.
        seed: Run seed; request seeds derive from it.
        name: Run label; None derives ``<model>[/self]-<key prefix>``.
    """

    kind: RunKind
    model: str
    backend: str
    backend_settings: Mapping[str, Any]
    instrument_name: str
    instrument_hash: str
    instrument_json: str = field(repr=False)
    persona_set_hash: str
    template_hash: str
    temperature: float = 0.1
    mode: RunMode = "sampling"
    n_repetitions: int = 10
    seed: int = 0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RUN_KINDS:
            raise ConfigError(f"run kind must be 'persona' or 'self', got {self.kind!r}")
        if self.mode not in RUN_MODES:
            raise ConfigError(f"run mode must be 'sampling' or 'exact', got {self.mode!r}")
        if not (isinstance(self.n_repetitions, int) and self.n_repetitions >= 1):
            raise ConfigError(f"n_repetitions must be an integer >= 1, got {self.n_repetitions!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.kind == "self" and self.persona_set_hash:
            raise ConfigError("a self run has no personas (persona_set_hash must be empty)")
        if self.kind == "persona" and not self.persona_set_hash:
            raise ConfigError("a persona run needs personas (persona_set_hash is empty)")
        if self.name is not None and not self.name.strip():
            raise ConfigError("run name must not be blank")
        object.__setattr__(
            self, "backend_settings", MappingProxyType(public_settings(self.backend_settings))
        )

    def key_fields(self) -> dict[str, Any]:
        """The settings that identify the run (everything but the name)."""
        return {
            "kind": self.kind,
            "model": self.model,
            "backend": self.backend,
            "backend_settings": dict(self.backend_settings),
            "instrument_name": self.instrument_name,
            "instrument_hash": self.instrument_hash,
            "persona_set_hash": self.persona_set_hash,
            "template_hash": self.template_hash,
            "temperature": float(self.temperature),
            "mode": self.mode,
            "n_repetitions": int(self.n_repetitions),
            "seed": int(self.seed),
        }

    @property
    def run_key(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`key_fields`."""
        raw = json.dumps(self.key_fields(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(raw).hexdigest()

    @property
    def default_name(self) -> str:
        """The label used when ``name`` is None."""
        base = self.model if self.kind == "persona" else f"{self.model}/self"
        return f"{base}-{self.run_key[:6]}"


@dataclass(frozen=True, kw_only=True)
class RunRecord(RunSpec):
    """A run as stored: its settings (the fields of :class:`RunSpec`, declared there once)
    plus what the store adds.

    Attributes:
        run_id: The store's id of the run.
        name: The run's label (always set once stored).
        status: ``pending``, ``running``, ``complete``, ``interrupted`` or ``failed``.
        source: Where the answers come from (``imported:<file>`` for runs read from a file).
        metadata: Protocols, cost, backend report and answer checks (see the engine).
        created_at, updated_at: ISO timestamps.
        stored_key: The key the run is stored under (see :attr:`run_key`).
    """

    run_id: int
    name: str
    status: RunStatus
    source: str
    metadata: Mapping[str, Any]
    created_at: str
    updated_at: str
    stored_key: str = field(repr=False)

    @property
    def run_key(self) -> str:
        """The key the run is stored under: :attr:`RunSpec.run_key` of its settings for
        collected runs; imported runs are keyed by their file instead."""
        return self.stored_key

    def instrument(self) -> Instrument:
        """Rebuild the instrument the run was collected (or imported) with."""
        return instrument_from_dict(json.loads(self.instrument_json), source=f"run {self.name!r}")

    @property
    def is_imported(self) -> bool:
        """Whether the run was imported from a file rather than collected."""
        return self.source.startswith("imported:")


@dataclass(frozen=True)
class AttemptRecord:
    """One request attempt for one slot (or, with ``repetition=None``, for a whole cell).

    Attributes:
        persona_id, item_id: The cell.
        repetition: The slot the attempt was for; None for cell-level errors.
        round: Index of the request within the cell (0-based).
        attempt: Attempt number of the slot (1-based; short attempts, then long form).
        seed: Request seed sent to the backend.
        max_tokens: Completion limit of the request.
        long_form: Whether the reply was parsed in long-form mode.
        response: Reply text (None if there was none).
        rating: Parsed rating, None if the reply held no valid rating.
        error: Why the attempt failed ("no rating", "empty reply", a backend error...).
        created_at: ISO timestamp; None means now.
    """

    persona_id: int
    item_id: int
    repetition: int | None
    round: int
    attempt: int
    seed: int | None
    max_tokens: int
    long_form: bool
    response: str | None
    rating: int | None
    error: str | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class AcceptedSlot:
    """An accepted answer: a valid rating, or ``INVALID_RATING`` after all attempts failed."""

    persona_id: int
    item_id: int
    repetition: int
    rating: int
    failures: int = 0
    response: str | None = None
    collected_at: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class DistributionRecord:
    """Rating distribution of one persona-item cell (exact mode)."""

    persona_id: int
    item_id: int
    scale: tuple[int, ...]
    probs: tuple[float, ...]
    mass: float = 1.0
    raw: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RecordResult:
    """What one :meth:`RunStore.record` call wrote.

    ``duplicates`` counts accepted slots (and distributions) that were already
    stored and were therefore ignored.
    """

    attempts: int
    accepted: int
    duplicates: int
    distributions: int


@dataclass(frozen=True)
class RunCounts:
    """Progress of a run.

    Attributes:
        slots: Distinct accepted slots (persona, item, repetition).
        rows: Rows in ``ratings`` (more than ``slots`` for imported retries).
        valid: Rows with a valid rating.
        failed: Rows with ``INVALID_RATING``.
        attempts: Recorded request attempts.
        distributions: Stored cell distributions (exact mode).
    """

    slots: int
    rows: int
    valid: int
    failed: int
    attempts: int
    distributions: int


@dataclass(frozen=True)
class CellProgress:
    """Attempt history of a cell, enough to resume it exactly where it stopped.

    Attributes:
        next_round: Index of the next request for the cell.
        short_attempts: Short-form attempts used so far, per repetition.
        long_attempts: Long-form attempts used so far, per repetition.
    """

    next_round: int
    short_attempts: Mapping[int, int]
    long_attempts: Mapping[int, int]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_json_default)


_INSERT_ATTEMPT = (
    "INSERT INTO attempts (run_id, persona_id, item_id, repetition, round, "
    "attempt, seed, max_tokens, long_form, response, rating, error, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_RATING = (
    "INSERT INTO ratings (run_id, persona_id, item_id, repetition, seq, "
    "rating, failures, response, collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _attempt_row(run_id: int, a: AttemptRecord, now: str) -> tuple[Any, ...]:
    """The ``attempts`` row of one attempt (``now`` when it carries no time)."""
    return (
        run_id, a.persona_id, a.item_id, a.repetition, a.round, a.attempt, a.seed,
        a.max_tokens, int(a.long_form), a.response, a.rating, a.error, a.created_at or now,
    )  # fmt: skip


def _rating_row(run_id: int, s: AcceptedSlot, now: str) -> tuple[Any, ...]:
    """The ``ratings`` row of one accepted answer (``now`` when it carries no time)."""
    return (
        run_id, s.persona_id, s.item_id, s.repetition, s.seq, s.rating, s.failures,
        s.response, s.collected_at or now,
    )  # fmt: skip


class RunStore(SQLiteStore):
    """A SQLite run store. Use :meth:`open`, preferably as a context manager.

    Not thread-safe: use one store object per thread (several processes may
    open the same file; SQLite serialises their writes).
    """

    KIND = "run store"
    APPLICATION_ID = APPLICATION_ID
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = _SCHEMA
    EXPECTED_TABLES = _EXPECTED_TABLES

    # --- runs ----------------------------------------------------------------------------

    def _row_to_record(self, row: Sequence[Any]) -> RunRecord:
        (
            run_id,
            run_key,
            name,
            kind,
            model,
            backend,
            backend_settings,
            instrument_name,
            instrument_hash,
            instrument_json,
            persona_hash,
            template_hash,
            temperature,
            mode,
            n_repetitions,
            seed,
            status,
            source,
            metadata,
            created_at,
            updated_at,
        ) = row
        return RunRecord(
            run_id=int(run_id),
            name=name,
            kind=kind,
            model=model,
            backend=backend,
            backend_settings=MappingProxyType(json.loads(backend_settings)),
            instrument_name=instrument_name,
            instrument_hash=instrument_hash,
            instrument_json=instrument_json,
            persona_set_hash=persona_hash,
            template_hash=template_hash,
            temperature=float(temperature),
            mode=mode,
            n_repetitions=int(n_repetitions),
            seed=int(seed),
            status=status,
            source=source,
            metadata=MappingProxyType(json.loads(metadata)),
            created_at=created_at,
            updated_at=updated_at,
            stored_key=run_key,
        )

    def _select_run(self, where: str, params: Sequence[Any]) -> RunRecord | None:
        row = self._conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where}", params
        ).fetchone()
        return None if row is None else self._row_to_record(row)

    def get_run(self, run_id: int) -> RunRecord:
        """The run with id ``run_id``; raises :class:`UnknownNameError` if absent."""
        record = self._select_run("run_id = ?", (int(run_id),))
        if record is None:
            raise UnknownNameError("run id", str(run_id), (str(r.run_id) for r in self.list_runs()))
        return record

    def list_runs(self) -> list[RunRecord]:
        """All runs, oldest first."""
        rows = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY run_id").fetchall()
        return [self._row_to_record(r) for r in rows]

    def find_run(self, name_or_id: str | int) -> RunRecord:
        """The run named ``name_or_id`` (or with that numeric id).

        Raises:
            UnknownNameError: No such run (with close names suggested).
        """
        if isinstance(name_or_id, int):
            return self.get_run(name_or_id)
        record = self._select_run("name = ?", (name_or_id,))
        if record is None and name_or_id.strip().isdigit():
            record = self._select_run("run_id = ?", (int(name_or_id),))
        if record is None:
            raise UnknownNameError("run", name_or_id, (r.name for r in self.list_runs()))
        return record

    def _insert_run(
        self,
        conn: sqlite3.Connection,
        spec: RunSpec,
        *,
        name: str,
        run_key: str,
        status: str,
        source: str,
        metadata: Mapping[str, Any],
    ) -> int:
        now = utc_now()
        cur = conn.execute(
            "INSERT INTO runs (run_key, name, kind, model, backend, backend_settings, "
            "instrument_name, instrument_hash, instrument_json, persona_set_hash, template_hash, "
            "temperature, mode, n_repetitions, seed, status, source, metadata, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_key,
                name,
                spec.kind,
                spec.model,
                spec.backend,
                _dumps(dict(spec.backend_settings)),
                spec.instrument_name,
                spec.instrument_hash,
                spec.instrument_json,
                spec.persona_set_hash,
                spec.template_hash,
                float(spec.temperature),
                spec.mode,
                int(spec.n_repetitions),
                int(spec.seed),
                status,
                source,
                _dumps(dict(metadata)),
                now,
                now,
            ),
        )
        run_id = cur.lastrowid
        if run_id is None:  # pragma: no cover - sqlite always sets it after INSERT
            raise StoreError(f"{self.path}: could not create run {name!r}")
        conn.execute("INSERT INTO usage (run_id) VALUES (?)", (run_id,))
        return int(run_id)

    @staticmethod
    def _insert_personas(conn: sqlite3.Connection, run_id: int, personas: Sequence[str]) -> None:
        conn.executemany(
            "INSERT INTO personas (run_id, persona_id, text) VALUES (?, ?, ?)",
            [(run_id, i, str(text)) for i, text in enumerate(personas)],
        )

    def get_or_create_run(
        self, spec: RunSpec, *, personas: Sequence[str] | None = None
    ) -> RunRecord:
        """Return the run with ``spec``'s settings, creating it if needed (idempotent).

        Args:
            spec: The run settings. ``spec.name`` None accepts any existing run with the
                same settings, or creates one named ``spec.default_name``.
            personas: Persona texts of a persona run, stored with a new run; they must
                match ``spec.persona_set_hash``.

        Raises:
            ConfigError: ``personas`` do not match ``spec.persona_set_hash``.
            UserError: ``spec.name`` is taken by a run with other settings, or a run with
                the same settings exists under another name.
        """
        if personas is not None and persona_set_hash(personas) != spec.persona_set_hash:
            raise ConfigError("personas do not match the run spec's persona_set_hash")
        key = spec.run_key
        with self._transaction() as conn:
            existing = self._select_run("run_key = ?", (key,))
            if existing is not None:
                if spec.name is not None and spec.name != existing.name:
                    raise UserError(
                        f"a run with the same settings already exists as {existing.name!r} "
                        f"in {self.path}; use that name to resume it"
                    )
                return existing
            name = spec.name if spec.name is not None else spec.default_name
            taken = self._select_run("name = ?", (name,))
            if taken is not None:
                raise UserError(
                    f"run name {name!r} is already used in {self.path} by a run with other "
                    f"settings ({self._differences(taken, spec)}); choose another name"
                )
            run_id = self._insert_run(
                conn,
                spec,
                name=name,
                run_key=key,
                status="pending",
                source="collected",
                metadata={},
            )
            if personas:
                self._insert_personas(conn, run_id, personas)
        logger.info("created run %r (id %d) in %s", name, run_id, self.path)
        return self.get_run(run_id)

    @staticmethod
    def _differences(record: RunRecord, spec: RunSpec) -> str:
        fields = spec.key_fields()
        diffs = []
        for key, value in fields.items():
            stored = getattr(record, key)
            if key == "backend_settings":
                stored = dict(stored)
            if stored != value:
                diffs.append(f"{key}: stored {stored!r}, requested {value!r}")
        if record.source != "collected":
            diffs.insert(0, f"source: {record.source}")
        return "; ".join(diffs) if diffs else "same settings"

    def set_status(self, run_id: int, status: RunStatus) -> None:
        """Set a run's status (one of :data:`RUN_STATUSES`)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status: expected one of {RUN_STATUSES}, got {status!r}")
        with self._transaction() as conn:
            # Unchanged: no write, so a session that changed nothing leaves the store's
            # bytes as they were (the study's analysis cache is keyed by them).
            conn.execute(
                "UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ? AND status != ?",
                (status, utc_now(), int(run_id), status),
            )

    def update_metadata(self, run_id: int, values: Mapping[str, Any]) -> RunRecord:
        """Merge ``values`` into a run's metadata (top-level keys replaced), in one transaction.

        Raises:
            UnknownNameError: No run ``run_id``.
            ConfigError: A value is not JSON-serialisable.
        """
        try:
            json.dumps(dict(values), default=_json_default)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"run metadata is not JSON-serialisable ({exc})") from None
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT metadata FROM runs WHERE run_id = ?", (int(run_id),)
            ).fetchone()
            if row is None:
                raise UnknownNameError(
                    "run id", str(run_id), (str(r.run_id) for r in self.list_runs())
                )
            merged = _dumps({**json.loads(row[0]), **dict(values)})
            if merged != row[0]:  # unchanged: no write (see set_status)
                conn.execute(
                    "UPDATE runs SET metadata = ?, updated_at = ? WHERE run_id = ?",
                    (merged, utc_now(), int(run_id)),
                )
        return self.get_run(run_id)

    def delete_run(self, run_id: int) -> None:
        """Delete a run and everything recorded for it."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM runs WHERE run_id = ?", (int(run_id),))

    def personas(self, run_id: int) -> list[str]:
        """Persona texts of a run, by persona id (empty for self runs and unknown sets)."""
        rows = self._conn.execute(
            "SELECT persona_id, text FROM personas WHERE run_id = ? ORDER BY persona_id",
            (int(run_id),),
        ).fetchall()
        return [text for _, text in rows]

    # --- recording -----------------------------------------------------------------------

    def record(
        self,
        run_id: int,
        *,
        attempts: Iterable[AttemptRecord] = (),
        accepted: Iterable[AcceptedSlot] = (),
        distributions: Iterable[DistributionRecord] = (),
        usage: Usage | None = None,
        requests: int = 0,
    ) -> RecordResult:
        """Write the outcome of one request in ONE transaction.

        An accepted slot (or distribution) already stored is ignored, never
        duplicated; the result counts it in ``duplicates`` and a warning is logged.
        Only that uniqueness conflict is ignored: any other constraint violation
        rolls the whole call back.

        Args:
            run_id: The run.
            attempts: Attempts made by the request.
            accepted: Slots the request completed.
            distributions: Cell distributions (exact mode).
            usage: Token usage of the request, added to the run's totals.
            requests: Number of backend requests to add to the run's request count.

        Returns:
            Counts of the rows written and of the duplicates ignored.
        """
        now = utc_now()
        attempt_rows = [_attempt_row(run_id, a, now) for a in attempts]
        accepted_rows = [_rating_row(run_id, s, now) for s in accepted]
        dist_rows = [
            (
                run_id,
                d.persona_id,
                d.item_id,
                _dumps(list(d.scale)),
                _dumps([float(p) for p in d.probs]),
                float(d.mass),
                None if d.raw is None else _dumps(dict(d.raw)),
                now,
            )
            for d in distributions
        ]
        with self._transaction() as conn:
            if attempt_rows:
                conn.executemany(_INSERT_ATTEMPT, attempt_rows)
            inserted = 0
            if accepted_rows:
                before = conn.total_changes
                conn.executemany(
                    _INSERT_RATING + " ON CONFLICT (run_id, persona_id, item_id, repetition, seq) "
                    "DO NOTHING",
                    accepted_rows,
                )
                inserted = conn.total_changes - before
            dist_inserted = 0
            if dist_rows:
                before = conn.total_changes
                conn.executemany(
                    "INSERT INTO distributions (run_id, persona_id, item_id, scale, "
                    "probs, mass, raw, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (run_id, persona_id, item_id) DO NOTHING",
                    dist_rows,
                )
                dist_inserted = conn.total_changes - before
            if usage is not None or requests:
                u = usage if usage is not None else Usage()
                conn.execute(
                    "UPDATE usage SET requests = requests + ?, prompt_tokens = prompt_tokens + ?, "
                    "completion_tokens = completion_tokens + ?, "
                    "cached_tokens = cached_tokens + ? WHERE run_id = ?",
                    (requests, u.prompt_tokens, u.completion_tokens, u.cached_tokens, run_id),
                )
        duplicates = (len(accepted_rows) - inserted) + (len(dist_rows) - dist_inserted)
        if duplicates:
            logger.warning(
                "run %d: %d answer(s) already stored were ignored (no duplicates written)",
                run_id,
                duplicates,
            )
        return RecordResult(len(attempt_rows), inserted, duplicates, dist_inserted)

    # --- reading -------------------------------------------------------------------------

    def completed_slots(self, run_id: int) -> set[tuple[int, int, int]]:
        """Accepted slots ``(persona_id, item_id, repetition)`` of a run."""
        rows = self._conn.execute(
            "SELECT DISTINCT persona_id, item_id, repetition FROM ratings WHERE run_id = ?",
            (int(run_id),),
        )
        return {(int(p), int(i), int(r)) for p, i, r in rows}

    def completed_cells(self, run_id: int) -> set[tuple[int, int]]:
        """Cells ``(persona_id, item_id)`` with a stored distribution (exact mode)."""
        rows = self._conn.execute(
            "SELECT persona_id, item_id FROM distributions WHERE run_id = ?", (int(run_id),)
        )
        return {(int(p), int(i)) for p, i in rows}

    def cell_progress(self, run_id: int) -> dict[tuple[int, int], CellProgress]:
        """Attempt history per cell ``(persona_id, item_id)`` (cells with attempts only)."""
        rows = self._conn.execute(
            "SELECT persona_id, item_id, repetition, MAX(round), "
            "SUM(long_form = 0), SUM(long_form = 1) FROM attempts "
            "WHERE run_id = ? AND repetition IS NOT NULL "
            "GROUP BY persona_id, item_id, repetition",
            (int(run_id),),
        )
        rounds: dict[tuple[int, int], int] = {}
        shorts: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        longs: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        for p, i, r, max_round, n_short, n_long in rows:
            cell = (int(p), int(i))
            rounds[cell] = max(rounds.get(cell, -1), int(max_round))
            shorts[cell][int(r)] = int(n_short)
            longs[cell][int(r)] = int(n_long)
        return {
            cell: CellProgress(
                next_round=last + 1,
                short_attempts=MappingProxyType(shorts[cell]),
                long_attempts=MappingProxyType(longs[cell]),
            )
            for cell, last in rounds.items()
        }

    def counts(self, run_id: int) -> RunCounts:
        """Slots, rows, valid and failed answers, attempts and distributions of a run."""
        conn = self._conn
        rid = (int(run_id),)
        rows, valid, failed = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(rating != ?), 0), COALESCE(SUM(rating = ?), 0) "
            "FROM ratings WHERE run_id = ?",
            (INVALID_RATING, INVALID_RATING, int(run_id)),
        ).fetchone()
        slots = conn.execute(
            "SELECT COUNT(*) FROM ratings WHERE run_id = ? AND seq = 0", rid
        ).fetchone()[0]
        attempts = conn.execute("SELECT COUNT(*) FROM attempts WHERE run_id = ?", rid).fetchone()[0]
        dists = conn.execute("SELECT COUNT(*) FROM distributions WHERE run_id = ?", rid).fetchone()[
            0
        ]
        return RunCounts(int(slots), int(rows), int(valid), int(failed), int(attempts), int(dists))

    def usage(self, run_id: int) -> tuple[int, Usage]:
        """``(requests, token usage)`` totals of a run."""
        row = self._conn.execute(
            "SELECT requests, prompt_tokens, completion_tokens, cached_tokens FROM usage "
            "WHERE run_id = ?",
            (int(run_id),),
        ).fetchone()
        if row is None:
            return 0, Usage()
        return int(row[0]), Usage(int(row[1]), int(row[2]), int(row[3]))

    def ratings_frame(self, run_id: int) -> pd.DataFrame:
        """Accepted answers of a run as a ratings frame (see :mod:`persona_collapse.core.frames`).

        Returns:
            Columns ``persona_id, item_id, repetition, rating, failures`` (int64),
            ``response, collected_at`` (str), ordered by slot then ``seq``.
            ``attrs``: ``kind``, ``run`` (name), ``model``.
        """
        record = self.get_run(run_id)
        rows = self._conn.execute(
            "SELECT persona_id, item_id, repetition, rating, failures, response, collected_at "
            "FROM ratings WHERE run_id = ? ORDER BY persona_id, item_id, repetition, seq",
            (int(run_id),),
        ).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [()] * 7
        frame = pd.DataFrame(
            {
                "persona_id": np.asarray(columns[0], dtype=np.int64),
                "item_id": np.asarray(columns[1], dtype=np.int64),
                "repetition": np.asarray(columns[2], dtype=np.int64),
                "rating": np.asarray(columns[3], dtype=np.int64),
                "failures": np.asarray(columns[4], dtype=np.int64),
                "response": pd.Series(
                    ["" if v is None else v for v in columns[5]], dtype=object
                ).astype(str),
                "collected_at": pd.Series(
                    ["" if v is None else v for v in columns[6]], dtype=object
                ).astype(str),
            }
        )
        frame.attrs["kind"] = record.kind
        frame.attrs["run"] = record.name
        frame.attrs["model"] = record.model
        return frame

    def attempts_frame(self, run_id: int) -> pd.DataFrame:
        """Every recorded attempt of a run, in recording order."""
        frame = pd.read_sql_query(
            "SELECT persona_id, item_id, repetition, round, attempt, seed, max_tokens, "
            "long_form, response, rating, error, created_at FROM attempts WHERE run_id = ? "
            "ORDER BY attempt_id",
            self._conn,
            params=(int(run_id),),
        )
        frame["long_form"] = frame["long_form"].astype(bool)
        return frame

    def distributions_frame(self, run_id: int) -> pd.DataFrame:
        """Stored distributions: ``persona_id, item_id, p<k>`` per scale value, ``mass``.

        Ordered by persona then item; ``attrs["scale"]`` holds the scale values.
        """
        rows = self._conn.execute(
            "SELECT persona_id, item_id, scale, probs, mass FROM distributions WHERE run_id = ? "
            "ORDER BY persona_id, item_id",
            (int(run_id),),
        ).fetchall()
        scale: list[int] = (
            json.loads(rows[0][2]) if rows else list(self.get_run(run_id).instrument().scale)
        )
        data: dict[str, Any] = {
            "persona_id": np.asarray([r[0] for r in rows], dtype=np.int64),
            "item_id": np.asarray([r[1] for r in rows], dtype=np.int64),
        }
        probs = np.asarray([json.loads(r[3]) for r in rows], dtype=np.float64).reshape(
            len(rows), len(scale)
        )
        for j, value in enumerate(scale):
            data[f"{DISTRIBUTION_PREFIX}{value}"] = probs[:, j]
        data["mass"] = np.asarray([r[4] for r in rows], dtype=np.float64)
        frame = pd.DataFrame(data)
        frame.attrs["scale"] = tuple(scale)
        return frame

    # --- import / export -----------------------------------------------------------------

    def import_csv(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        kind: RunKind | None = None,
        model: str | None = None,
        personas: Sequence[str] | None = None,
        temperature: float = 0.1,
        instrument: Instrument | None = None,
        n_repetitions: int | None = None,
    ) -> RunRecord:
        """Import a reference-layout ratings CSV file as a new run, keeping every row.

        Rows of the same slot (retries in the reference data) are all kept, as
        ``seq = 0, 1, ...`` in file order. Importing the same file again under the
        same name is a no-op (logged, the stored run is returned); the same name
        with different content is an error.

        Args:
            path: Persona or self CSV file (see :mod:`persona_collapse.store.reference_csv`).
            name: Label of the new run.
            kind: ``"persona"`` or ``"self"``; None takes it from the file's columns.
            model: Model label; default the file name without extension.
            personas: Persona texts (persona ids index them), stored with the run.
            temperature: Temperature the file was collected at (recorded only).
            instrument: Instrument of the file's item ids; default MFQ-30.
            n_repetitions: Planned repetitions; default the largest repetition in the file.

        Returns:
            The imported (or previously imported) run.

        Raises:
            InputFileError: The file is unreadable or malformed, or a persona id has
                no text in ``personas``.
            UserError: ``kind`` disagrees with the file, or ``name`` is taken by other data.
        """
        # Imported lazily: reference_csv is only needed for imports.
        from persona_collapse.store.reference_csv import read_ratings_csv

        file = Path(path)
        inst = instrument if instrument is not None else mfq30()
        frame = read_ratings_csv(file, instrument=inst.with_catch(True))
        file_kind: RunKind = "self" if frame.attrs.get("kind") == "self" else "persona"
        if kind is not None and kind != file_kind:
            raise UserError(f"{file}: --kind {kind} given but the file is a {file_kind} file")
        sha = file_sha256(file)
        existing = self._select_run("name = ?", (name,))
        if existing is not None:
            if existing.metadata.get("sha256") == sha:
                logger.info("%s: already imported as run %r, skipped", file, name)
                return existing
            raise UserError(
                f"run name {name!r} is already used in {self.path} by other data; "
                "choose another name"
            )
        person_ids = frame["persona_id"].to_numpy()
        texts: Sequence[str] = ()
        if file_kind == "persona" and personas is not None:
            texts = list(personas)
            too_big = person_ids >= len(texts)
            if too_big.any():
                bad = int(person_ids[np.flatnonzero(too_big)[0]])
                raise InputFileError(
                    file, f"persona id {bad} has no persona text ({len(texts)} personas given)"
                )
        reps = frame["repetition"].to_numpy()
        n_reps = n_repetitions if n_repetitions is not None else max(int(reps.max()), 1)
        spec = RunSpec(
            kind=file_kind,
            model=model if model is not None else file.stem,
            backend="import",
            backend_settings={},
            instrument_name=inst.name,
            instrument_hash=inst.content_hash,
            instrument_json=json.dumps(inst.to_dict(), ensure_ascii=False),
            # A persona run without known texts still needs a non-empty set marker.
            persona_set_hash=(
                persona_set_hash(texts) if texts else ("unknown" if file_kind == "persona" else "")
            ),
            template_hash="",
            temperature=temperature,
            mode="sampling",
            n_repetitions=n_reps,
            seed=0,
            name=name,
        )
        # Several rows of one slot keep file order as seq 0, 1, 2...
        keys = ["persona_id", "item_id", "repetition"]
        seq = frame.groupby(keys, sort=False).cumcount().to_numpy(dtype=np.int64)
        responses = frame["response"].astype(str).tolist()
        collected = frame["collected_at"].astype(str).tolist()
        rows_iter = zip(
            person_ids.tolist(),
            frame["item_id"].to_numpy().tolist(),
            reps.tolist(),
            seq.tolist(),
            frame["rating"].to_numpy().tolist(),
            frame["failures"].to_numpy().tolist(),
            responses,
            collected,
            strict=True,
        )
        source = f"imported:{file.resolve()}"
        import_key = hashlib.sha256(f"{source}\0{sha}\0{name}".encode()).hexdigest()
        with self._transaction() as conn:
            run_id = self._insert_run(
                conn,
                spec,
                name=name,
                run_key=import_key,
                status="complete",
                source=source,
                metadata={"sha256": sha, "rows": len(frame)},
            )
            if texts:
                self._insert_personas(conn, run_id, texts)
            conn.executemany(
                "INSERT INTO ratings (run_id, persona_id, item_id, repetition, seq, rating, "
                "failures, response, collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (run_id, p, i, r, s, rt, f, resp or None, c or None)
                    for p, i, r, s, rt, f, resp, c in rows_iter
                ),
            )
        logger.info("imported %d rows from %s as run %r", len(frame), file, name)
        return self.get_run(run_id)

    def add_imported_run(
        self,
        spec: RunSpec,
        *,
        import_key: str,
        source: str,
        metadata: Mapping[str, Any],
        personas: Sequence[str] = (),
        attempts: Iterable[AttemptRecord] = (),
        accepted: Iterable[AcceptedSlot] = (),
        usage: Usage | None = None,
        requests: int = 0,
    ) -> RunRecord:
        """Store a complete run read from another tool's files, in ONE transaction.

        For importers of other formats (e.g. inspect_ai logs): the run, its personas,
        attempts, answers and usage are written together or not at all. ``spec.name``
        must be set.

        Raises:
            UserError: ``spec.name`` is taken, or these data are already stored.
        """
        if spec.name is None:
            raise ValueError("spec.name: an imported run needs a name")
        for where, value in (("name = ?", spec.name), ("run_key = ?", import_key)):
            taken = self._select_run(where, (value,))
            if taken is not None:
                raise UserError(
                    f"run name {spec.name!r} is already used in {self.path}; choose another name"
                    if where.startswith("name")
                    else f"{source.removeprefix('imported:')} is already imported in "
                    f"{self.path} as run {taken.name!r}"
                )
        with self._transaction() as conn:
            run_id = self._insert_run(
                conn,
                spec,
                name=spec.name,
                run_key=import_key,
                status="complete",
                source=source,
                metadata=metadata,
            )
            if personas:
                self._insert_personas(conn, run_id, personas)
            now = utc_now()
            conn.executemany(_INSERT_ATTEMPT, [_attempt_row(run_id, a, now) for a in attempts])
            # A fresh run: no slot can conflict, and a repeated slot in the import is an error.
            conn.executemany(_INSERT_RATING, [_rating_row(run_id, s, now) for s in accepted])
            u = usage if usage is not None else Usage()
            conn.execute(
                "UPDATE usage SET requests = ?, prompt_tokens = ?, completion_tokens = ?, "
                "cached_tokens = ? WHERE run_id = ?",
                (int(requests), u.prompt_tokens, u.completion_tokens, u.cached_tokens, run_id),
            )
        logger.info("imported run %r from %s", spec.name, source)
        return self.get_run(run_id)

    def export(
        self,
        run_id: int,
        path: str | os.PathLike[str],
        format: Literal["csv", "parquet"] | None = None,
        *,
        raw_csv: bool = False,
    ) -> Path:
        """Write a run's ratings frame to ``path``, atomically.

        Args:
            run_id: The run.
            path: Destination file.
            format: ``"csv"`` (reference-compatible layout) or ``"parquet"``; None picks
                from the suffix (``.parquet``/``.pq`` -> parquet, anything else CSV).
            raw_csv: CSV only: write replies as they are, without neutralising text a
                spreadsheet would run as a formula.

        Returns:
            The destination path.

        Raises:
            MissingDependencyError: Parquet requested but pyarrow is not installed.
            InputFileError: The destination cannot be written.
        """
        dest = Path(path)
        fmt = format
        if fmt is None:
            fmt = "parquet" if dest.suffix.lower() in {".parquet", ".pq"} else "csv"
        if fmt not in ("csv", "parquet"):
            raise UserError(f"export format must be 'csv' or 'parquet', got {fmt!r}")
        frame = self.ratings_frame(run_id)
        if fmt == "csv":
            from persona_collapse.store.reference_csv import write_ratings_csv

            return write_ratings_csv(frame, dest, raw=raw_csv)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MissingDependencyError("pyarrow", "parquet") from None
        frame.attrs.clear()  # attrs are not parquet metadata; keep the file plain
        with atomic_path(dest) as tmp:
            frame.to_parquet(tmp, index=False)
        return dest


__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "AcceptedSlot",
    "AttemptRecord",
    "CellProgress",
    "DistributionRecord",
    "RecordResult",
    "RunCounts",
    "RunRecord",
    "RunSpec",
    "RunStore",
    "persona_set_hash",
    "public_settings",
    "utc_now",
]
