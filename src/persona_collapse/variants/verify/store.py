"""The verification store: one SQLite file holding answers, judge verdicts and every judge try.

Layout (schema version :data:`SCHEMA_VERSION` in ``PRAGMA user_version``;
``PRAGMA application_id`` :data:`APPLICATION_ID` marks a verification store):

``runs``
    One row per answering model setup: label, model, backend and its settings
    (secrets stripped), questions, temperature, answer length, system prompt and
    seed. ``run_key`` (a hash of those settings) and ``name`` are unique. The
    number of samples is not part of the key: asking for more extends a run.
``judges``
    One row per judge setup (backend, settings, model, method, rubric hash).
``answers``
    One answer per (run, question, sample), with its request seed and token usage.
``judgments``
    One result per (run, judge, question, sample, scale): score, number mass
    (logprob method), CODE/REFUSAL verdict, whether the judge failed, the number
    of tries, the last reply and the raw top logprobs.
``judge_attempts``
    Every judge reply that held no usable score (sampling method), with the reason.

Each answer and each judgment is written in its own transaction as soon as it
arrives, so an interrupted verification resumes where it stopped and never
asks a stored answer or judgment again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from persona_collapse.backends.base import Usage
from persona_collapse.core.errors import ConfigError
from persona_collapse.store.base import SQLiteStore
from persona_collapse.store.sqlite import public_settings, utc_now

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the table layout written by this release."""

APPLICATION_ID = 0x50435646
"""``PRAGMA application_id`` of verification stores ("PCVF")."""

_SCHEMA = """
CREATE TABLE runs (
    run_id            INTEGER PRIMARY KEY,
    run_key           TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL UNIQUE,
    model             TEXT NOT NULL,
    backend           TEXT NOT NULL,
    backend_settings  TEXT NOT NULL,
    questions         TEXT NOT NULL,
    temperature       REAL NOT NULL,
    max_tokens        INTEGER NOT NULL,
    system_prompt     TEXT,
    seed              INTEGER NOT NULL,
    created_at        TEXT NOT NULL
);

CREATE TABLE judges (
    judge_id     INTEGER PRIMARY KEY,
    judge_key    TEXT NOT NULL UNIQUE,
    model        TEXT NOT NULL,
    backend      TEXT NOT NULL,
    settings     TEXT NOT NULL,
    method       TEXT NOT NULL CHECK (method IN ('logprobs', 'sampling')),
    created_at   TEXT NOT NULL
);

CREATE TABLE answers (
    run_id             INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    question_id        TEXT NOT NULL,
    sample             INTEGER NOT NULL,
    text               TEXT NOT NULL,
    seed               INTEGER,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    PRIMARY KEY (run_id, question_id, sample)
);

CREATE TABLE judgments (
    run_id             INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    judge_id           INTEGER NOT NULL REFERENCES judges(judge_id) ON DELETE CASCADE,
    question_id        TEXT NOT NULL,
    sample             INTEGER NOT NULL,
    scale              TEXT NOT NULL CHECK (scale IN ('alignment', 'coherence')),
    score              REAL,
    mass               REAL,
    verdict            TEXT CHECK (verdict IN ('CODE', 'REFUSAL')),
    failed             INTEGER NOT NULL DEFAULT 0,
    attempts           INTEGER NOT NULL DEFAULT 1,
    reply              TEXT,
    raw                TEXT,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    PRIMARY KEY (run_id, judge_id, question_id, sample, scale)
);

CREATE TABLE judge_attempts (
    attempt_id   INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    judge_id     INTEGER NOT NULL REFERENCES judges(judge_id) ON DELETE CASCADE,
    question_id  TEXT NOT NULL,
    sample       INTEGER NOT NULL,
    scale        TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    seed         INTEGER,
    reply        TEXT,
    problem      TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
"""

_EXPECTED_TABLES = frozenset({"runs", "judges", "answers", "judgments", "judge_attempts"})


def _key(data: Mapping[str, Any]) -> str:
    raw = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class AnswerSpec:
    """The settings that define a verification run (equal settings: the same run).

    Attributes:
        model: Model label shown in tables.
        backend: Backend name.
        backend_settings: ``Backend.describe()`` (secret-looking keys are dropped).
        questions: ``(id, text)`` of each question asked, in order.
        temperature: Answer sampling temperature.
        max_tokens: Answer length limit.
        system_prompt: System message sent before each question (None: none).
        seed: Seed the request seeds derive from.
        name: Run label; None uses the model label.
    """

    model: str
    backend: str
    backend_settings: Mapping[str, Any]
    questions: tuple[tuple[str, str], ...]
    temperature: float
    max_tokens: int
    system_prompt: str | None
    seed: int
    name: str | None = None

    def key_fields(self) -> dict[str, Any]:
        """The settings that identify the run (everything but the name)."""
        return {
            "model": self.model,
            "backend": self.backend,
            "backend_settings": public_settings(self.backend_settings),
            "questions": [list(q) for q in self.questions],
            "temperature": float(self.temperature),
            "max_tokens": int(self.max_tokens),
            "system_prompt": self.system_prompt,
            "seed": int(self.seed),
        }

    @property
    def run_key(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`key_fields`."""
        return _key(self.key_fields())


@dataclass(frozen=True)
class JudgeSpec:
    """The settings that define a judge (equal settings: stored judgments are reused).

    Attributes:
        model: Judge model label.
        backend: Backend name.
        settings: ``describe()`` of the judge backend plus the judging options.
        method: ``logprobs`` or ``sampling``.
    """

    model: str
    backend: str
    settings: Mapping[str, Any]
    method: str

    @property
    def judge_key(self) -> str:
        """SHA-256 (hex) of the judge's canonical settings."""
        return _key(
            {
                "model": self.model,
                "backend": self.backend,
                "settings": public_settings(self.settings),
                "method": self.method,
            }
        )


@dataclass(frozen=True)
class StoredRun:
    """A verification run as stored."""

    run_id: int
    name: str
    model: str
    backend: str
    run_key: str


@dataclass(frozen=True)
class Judgment:
    """One judge result of one answer on one scale (see the ``judgments`` table)."""

    question_id: str
    sample: int
    scale: str
    score: float | None
    mass: float | None
    verdict: str | None
    failed: bool
    attempts: int
    reply: str | None = None
    raw: Mapping[str, Any] | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class FailedReply:
    """A judge reply without a usable score (recorded, then asked again)."""

    question_id: str
    sample: int
    scale: str
    attempt: int
    seed: int | None
    reply: str | None
    problem: str


class VerifyStore(SQLiteStore):
    """A SQLite verification store. Use :meth:`open`, preferably as a context manager."""

    KIND = "verification store"
    APPLICATION_ID = APPLICATION_ID
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = _SCHEMA
    EXPECTED_TABLES = _EXPECTED_TABLES

    # --- runs and judges -------------------------------------------------------------------

    def get_or_create_run(self, spec: AnswerSpec) -> StoredRun:
        """The run with ``spec``'s key, created if new.

        The name is ``spec.name``, else the model label (with a key suffix if that
        label is taken by a run with other settings).

        Raises:
            ConfigError: ``spec.name`` belongs to a run with other settings.
        """
        key = spec.run_key
        row = self._conn.execute(
            "SELECT run_id, name, model, backend, run_key FROM runs WHERE run_key = ?", (key,)
        ).fetchone()
        if row is not None:
            found = StoredRun(*row)
            if spec.name is not None and spec.name != found.name:
                logger.info("run %r already stored as %r", spec.name, found.name)
            return found
        name = spec.name if spec.name is not None else spec.model
        taken = self._conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone()
        if taken is not None:
            if spec.name is not None:
                raise ConfigError(
                    f"{self.path}: verification run {name!r} exists with other settings; "
                    "choose another name or another store"
                )
            name = f"{name}-{key[:6]}"
        fields = spec.key_fields()
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (run_key, name, model, backend, backend_settings, questions, "
                "temperature, max_tokens, system_prompt, seed, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    name,
                    spec.model,
                    spec.backend,
                    json.dumps(fields["backend_settings"], sort_keys=True, default=str),
                    json.dumps(fields["questions"], ensure_ascii=False),
                    float(spec.temperature),
                    int(spec.max_tokens),
                    spec.system_prompt,
                    int(spec.seed),
                    utc_now(),
                ),
            )
            run_id = int(cursor.lastrowid or 0)
        return StoredRun(run_id, name, spec.model, spec.backend, key)

    def list_runs(self) -> list[StoredRun]:
        """Every run, in creation order."""
        rows = self._conn.execute(
            "SELECT run_id, name, model, backend, run_key FROM runs ORDER BY run_id"
        ).fetchall()
        return [StoredRun(*r) for r in rows]

    def get_or_create_judge(self, spec: JudgeSpec) -> int:
        """Id of the judge with ``spec``'s key, created if new."""
        key = spec.judge_key
        row = self._conn.execute(
            "SELECT judge_id FROM judges WHERE judge_key = ?", (key,)
        ).fetchone()
        if row is not None:
            return int(row[0])
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO judges (judge_key, model, backend, settings, method, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    spec.model,
                    spec.backend,
                    json.dumps(public_settings(spec.settings), sort_keys=True, default=str),
                    spec.method,
                    utc_now(),
                ),
            )
            return int(cursor.lastrowid or 0)

    # --- answers and judgments ---------------------------------------------------------------

    def answers(self, run_id: int) -> dict[tuple[str, int], str]:
        """Stored answers of a run by (question id, sample)."""
        rows = self._conn.execute(
            "SELECT question_id, sample, text FROM answers WHERE run_id = ?", (run_id,)
        )
        return {(q, int(s)): t for q, s, t in rows}

    def add_answer(
        self,
        run_id: int,
        question_id: str,
        sample: int,
        text: str,
        *,
        seed: int | None,
        usage: Usage,
    ) -> None:
        """Store one answer (a second answer to the same slot is ignored)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO answers (run_id, question_id, sample, text, seed, "
                "prompt_tokens, completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    question_id,
                    int(sample),
                    text,
                    seed,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    utc_now(),
                ),
            )

    def judgments(self, run_id: int, judge_id: int) -> dict[tuple[str, int, str], Judgment]:
        """Stored judgments by (question id, sample, scale)."""
        rows = self._conn.execute(
            "SELECT question_id, sample, scale, score, mass, verdict, failed, attempts, reply, "
            "raw, prompt_tokens, completion_tokens FROM judgments "
            "WHERE run_id = ? AND judge_id = ?",
            (run_id, judge_id),
        )
        out: dict[tuple[str, int, str], Judgment] = {}
        for q, s, scale, score, mass, verdict, failed, attempts, reply, raw, pt, ct in rows:
            out[(q, int(s), scale)] = Judgment(
                q,
                int(s),
                scale,
                score,
                mass,
                verdict,
                bool(failed),
                int(attempts),
                reply,
                None if raw is None else json.loads(raw),
                Usage(int(pt), int(ct)),
            )
        return out

    def add_judgment(
        self,
        run_id: int,
        judge_id: int,
        judgment: Judgment,
        *,
        failures: Sequence[FailedReply] = (),
    ) -> None:
        """Store a judgment and the failed replies that preceded it, in one transaction."""
        j = judgment
        with self._transaction() as conn:
            for f in failures:
                conn.execute(
                    "INSERT INTO judge_attempts (run_id, judge_id, question_id, sample, scale, "
                    "attempt, seed, reply, problem, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        judge_id,
                        f.question_id,
                        f.sample,
                        f.scale,
                        f.attempt,
                        f.seed,
                        f.reply,
                        f.problem,
                        utc_now(),
                    ),
                )
            conn.execute(
                "INSERT OR REPLACE INTO judgments (run_id, judge_id, question_id, sample, scale, "
                "score, mass, verdict, failed, attempts, reply, raw, prompt_tokens, "
                "completion_tokens, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    judge_id,
                    j.question_id,
                    j.sample,
                    j.scale,
                    j.score,
                    j.mass,
                    j.verdict,
                    int(j.failed),
                    j.attempts,
                    j.reply,
                    None if j.raw is None else json.dumps(j.raw, default=str),
                    j.usage.prompt_tokens,
                    j.usage.completion_tokens,
                    utc_now(),
                ),
            )

    def failed_replies(self, run_id: int, judge_id: int) -> pd.DataFrame:
        """Every recorded judge reply without a usable score (one row per try)."""
        return pd.read_sql_query(
            "SELECT question_id, sample, scale, attempt, seed, reply, problem FROM judge_attempts "
            "WHERE run_id = ? AND judge_id = ? ORDER BY attempt_id",
            self._conn,
            params=(run_id, judge_id),
        )

    def usage(self, run_id: int, judge_id: int | None = None) -> dict[str, Usage]:
        """Token usage of the answers and (for ``judge_id``) of the judge."""
        answers = self._conn.execute(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
            "FROM answers WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        out = {"answers": Usage(int(answers[0]), int(answers[1]))}
        if judge_id is not None:
            judge = self._conn.execute(
                "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
                "FROM judgments WHERE run_id = ? AND judge_id = ?",
                (run_id, judge_id),
            ).fetchone()
            out["judge"] = Usage(int(judge[0]), int(judge[1]))
        return out


__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "AnswerSpec",
    "FailedReply",
    "JudgeSpec",
    "Judgment",
    "StoredRun",
    "VerifyStore",
]
