"""What every SQLite file of persona-collapse shares: opening, schema checks, transactions.

A store class names its kind, application id, schema version, schema SQL and
expected tables; :class:`SQLiteStore` does the rest. Files are opened in WAL
mode with ``synchronous=NORMAL``: every committed transaction survives a
process crash or ``kill -9``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, cast

from persona_collapse.core.errors import StoreCorruptError, StoreError
from persona_collapse.core.secrets import scrub_value

logger = logging.getLogger(__name__)

# Primary SQLite result codes of a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_CORRUPT_CODES = frozenset({11, 26})


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite reporting damaged pages (not a lock, a constraint...)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


class _GuardedCursor(sqlite3.Cursor):
    """A cursor that turns page-corruption errors into one :class:`StoreCorruptError`.

    Damage can surface in any statement or fetch of any command; translating it
    here, where every query passes, gives one message naming the file everywhere.
    """

    def _corrupt(self, exc: sqlite3.DatabaseError) -> BaseException:
        conn = self.connection
        if isinstance(conn, _GuardedConnection) and conn.guarded and is_corruption(exc):
            return StoreCorruptError(conn.store_path, conn.store_kind, exc)
        return exc

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def executemany(self, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().executemany(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            return super().fetchmany(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None


class _GuardedConnection(sqlite3.Connection):
    """A connection whose cursors are :class:`_GuardedCursor` (see there)."""

    store_path: object = None
    store_kind: str = "store"
    guarded: bool = False  # off while opening, where open() gives its own messages

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or _GuardedCursor)


def _scrubbed(
    parameters: Sequence[Any] | Mapping[str, Any],
) -> list[Any] | dict[str, Any]:
    """Statement parameters (positional or named) with secrets masked in strings."""
    if isinstance(parameters, Mapping):
        return {k: scrub_value(v) for k, v in parameters.items()}
    return [scrub_value(v) for v in parameters]


class _ScrubbingConnection:
    """A connection whose writes never carry a secret.

    Every string parameter of ``execute``/``executemany`` goes through
    :func:`persona_collapse.core.secrets.scrub` first: model replies and error messages are
    written verbatim otherwise, and a server may echo the request's key into them.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()
    ) -> sqlite3.Cursor:
        return self._conn.execute(sql, _scrubbed(parameters))

    def executemany(
        self, sql: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]
    ) -> sqlite3.Cursor:
        return self._conn.executemany(sql, (_scrubbed(row) for row in rows))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class SQLiteStore:
    """Base class of the SQLite stores. Use :meth:`open`, preferably as a context manager.

    Not thread-safe: use one store object per thread (several processes may
    open the same file; SQLite serialises their writes).
    """

    KIND: ClassVar[str] = "store"
    """Human name of the file kind, used in error messages ("run store")."""
    APPLICATION_ID: ClassVar[int] = 0
    """``PRAGMA application_id`` marking files of this kind."""
    SCHEMA_VERSION: ClassVar[int] = 1
    """Schema version written into new files (``PRAGMA user_version``)."""
    SCHEMA: ClassVar[str] = ""
    """SQL statements, separated by ``;``, that create an empty store."""
    EXPECTED_TABLES: ClassVar[frozenset[str]] = frozenset()
    """Tables a valid file must have."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._conn = connection

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Self:
        """Open (and, if ``create``, create) the store at ``path``.

        Raises:
            StoreError: The file is missing (``create=False``), a directory, not SQLite,
                of another kind, damaged, or written by a newer persona-collapse.
        """
        kind = cls.KIND
        file = Path(path)
        if file.is_dir():
            raise StoreError(f"{file}: is a directory, expected a {kind} file")
        if not file.exists():
            if not create:
                raise StoreError(f"{file}: {kind} not found")
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{file}: cannot create {kind} ({exc.strerror or exc})") from None
        try:
            conn = sqlite3.connect(
                file, isolation_level=None, timeout=30.0, factory=_GuardedConnection
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{file}: cannot open {kind} ({exc})") from None
        conn.store_path = file
        conn.store_kind = kind
        store = cls(file, conn)
        try:
            store._initialise()
        except sqlite3.OperationalError as exc:
            conn.close()
            raise StoreError(f"{file}: cannot open {kind} ({exc})") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{file}: not a persona-collapse {kind} or corrupt ({exc})") from None
        except BaseException:
            conn.close()
            raise
        conn.guarded = True
        return store

    def _initialise(self) -> None:
        conn = self._conn
        kind = self.KIND
        # Reading the header first makes a non-SQLite file fail here, before any write.
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        if version == 0 and app_id == 0 and not tables:
            self._create_schema()
        elif app_id != self.APPLICATION_ID:
            raise StoreError(f"{self.path}: an SQLite database but not a persona-collapse {kind}")
        elif version > self.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: {kind} schema version {version} is newer than this "
                f"persona-collapse supports ({self.SCHEMA_VERSION}); upgrade persona-collapse"
            )
        elif version < 1 or not tables >= self.EXPECTED_TABLES:
            raise StoreError(f"{self.path}: {kind} is damaged (schema version {version})")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("%s: WAL journaling unavailable, using %s", self.path, mode)
        # With WAL, NORMAL keeps every committed transaction across a process crash.
        conn.execute("PRAGMA synchronous = NORMAL")

    def _create_schema(self) -> None:
        with self._transaction() as conn:
            for statement in self.SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {self.APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
        logger.info("created %s %s (schema version %d)", self.KIND, self.path, self.SCHEMA_VERSION)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any exception.

        The connection it yields scrubs secrets from every string it writes (the one
        place replies and errors pass on their way into a store).

        Raises:
            StoreError: The database is locked by another writer for too long, the
                disk is full or the file became unwritable.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Duck-typed: it forwards everything else to the real connection.
                yield cast(sqlite3.Connection, _ScrubbingConnection(conn))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: cannot write to the {self.KIND} ({exc})") from None

    @property
    def schema_version(self) -> int:
        """Schema version of the open file."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        # Reads that bypass the guarded cursor (pandas) still end in the one message.
        if exc is not None and is_corruption(exc):
            raise StoreCorruptError(self.path, self.KIND, exc) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
