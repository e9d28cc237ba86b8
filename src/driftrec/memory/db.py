"""The durable store behind memory: one interface, two backends.

SQLite (this module) is the embedded default: one file, one connection per worker thread, WAL, full
fsync on commit. PostgreSQL (``postgres.py``) is for several processes or hosts, picked by
``DRIFTREC_DATABASE_URL``. Both run the same SQL: the stores write portable statements (``?``
placeholders, ``ON CONFLICT``) and the PostgreSQL connection translates the few spellings that differ.

The schema is versioned and migrated forward when a store is opened. Every row is keyed by user; nothing
is keyed by a client-chosen id alone (two users may both call their first session "1"). On SQLite deleted
rows are overwritten on disk (``secure_delete``) and ``checkpoint()`` truncates the write-ahead log, so
forgetting a user leaves none of their bytes in the file or the WAL.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from driftrec.config import Settings

R = TypeVar("R")

SCHEMA_VERSION = 5  # v3: profile_edits; v4: api_keys; v5: PostgreSQL's events (user, seq) index

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    user       TEXT NOT NULL,
    item       TEXT NOT NULL,
    action     TEXT NOT NULL,
    ts         REAL NOT NULL,
    rating     REAL,
    text       TEXT,
    session_id TEXT
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events (user, ts, seq);
CREATE TABLE IF NOT EXISTS summaries (
    user       TEXT NOT NULL,
    session_id TEXT NOT NULL,
    ended_at   REAL NOT NULL,
    body       TEXT NOT NULL,
    applied    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, session_id)
);
CREATE INDEX IF NOT EXISTS summaries_user ON summaries (user, ended_at);
CREATE TABLE IF NOT EXISTS statements (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user       TEXT NOT NULL,
    name       TEXT NOT NULL,
    polarity   TEXT NOT NULL,
    text       TEXT NOT NULL,
    ts         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS statements_user ON statements (user, ts);
CREATE TABLE IF NOT EXISTS chat_turns (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user       TEXT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    ts         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_turns_user ON chat_turns (user, seq);
CREATE TABLE IF NOT EXISTS chat_summaries (
    user       TEXT PRIMARY KEY,
    upto_seq   INTEGER NOT NULL,
    summary    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_heads (
    user       TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_versions (
    user       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (user, version)
);
CREATE TABLE IF NOT EXISTS profile_edits (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user       TEXT NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    action     TEXT NOT NULL,
    ts         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS profile_edits_user ON profile_edits (user, seq);
CREATE TABLE IF NOT EXISTS upkeep (
    user       TEXT PRIMARY KEY,
    due_at     REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    error      TEXT
);
CREATE INDEX IF NOT EXISTS upkeep_due ON upkeep (due_at);
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    user       TEXT,
    name       TEXT NOT NULL,
    created    REAL NOT NULL,
    revoked    REAL
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user);
CREATE TABLE IF NOT EXISTS meta (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL
);
"""

# v1 (driftrec 0.1) keyed summaries by the client's session id alone; v2 keys them by (user, session).
_MIGRATE_1_TO_2 = """
ALTER TABLE summaries RENAME TO summaries_v1;
DROP INDEX IF EXISTS summaries_user;
"""
_COPY_1_TO_2 = """
INSERT OR IGNORE INTO summaries (user, session_id, ended_at, body, applied)
    SELECT user, session_id, ended_at, body, applied FROM summaries_v1;
UPDATE summaries SET
    session_id = 'auto:' || substr(session_id, length(user) + 2),
    body = json_set(body, '$.session_id', 'auto:' || substr(session_id, length(user) + 2))
    WHERE substr(session_id, 1, length(user) + 1) = user || ':';
DROP TABLE summaries_v1;
"""

# Every table that holds a user's rows, for forgetting them.
USER_TABLES = (
    "events",
    "summaries",
    "statements",
    "chat_turns",
    "chat_summaries",
    "profile_versions",
    "profile_heads",
    "profile_edits",
    "upkeep",
    "api_keys",  # keys scoped to the user (admin keys have no user)
)


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or written (server down, connection lost, disk full).

    Nothing acknowledged before it is lost; the caller may retry once the store is back (the HTTP service
    answers 503)."""


class Connection:
    """One backend connection with the interface the stores use: ``execute``, ``executemany``.

    Backend errors that mean "the store is not usable right now" surface as :class:`StoreUnavailable`."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:  # a cursor: fetchone/fetchall/rowcount
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        raise NotImplementedError


GENERATION = "log_generation"  # meta key: bumped whenever events are deleted


def insert_sql(table: str, columns: Sequence[str], rows: int = 1) -> str:
    """INSERT of ``rows`` rows of ``columns`` into ``table`` (``?`` placeholders), skipping conflicting rows."""
    row = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)} ON CONFLICT DO NOTHING"


class Database(abc.ABC):
    """The store's interface: connections per worker thread, all-or-nothing transactions, forgetting."""

    backend: str = ""
    # Reads are of a local file, answered in microseconds without waiting on a network or a writer: a request
    # may make them on the event loop (its thread's own connection) instead of hopping to a worker thread.
    local_reads: bool = False
    # Reads can be made on the event loop without blocking it (``read_row``: an asynchronous driver): a request
    # reads its state there, and hops to a worker thread only for what needs more round trips.
    async_reads: bool = False

    async def read_row(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """One row, read without blocking the event loop (only where ``async_reads``)."""
        raise NotImplementedError(f"{self.backend} reads only in worker threads")

    async def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row, read without blocking the event loop (only where ``async_reads``)."""
        raise NotImplementedError(f"{self.backend} reads only in worker threads")

    async def aclose(self) -> None:
        """Close what the running event loop holds of this store (asynchronous reads' connections)."""
        return None  # a store that reads only in threads holds nothing per loop

    @abc.abstractmethod
    def connection(self) -> Connection:
        """This thread's connection (made on first use, remade after it broke)."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """One writer at a time, all or nothing: every transaction is serialized against every other,
        across threads and processes (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock)."""

    @abc.abstractmethod
    def schema_version(self) -> int: ...

    @abc.abstractmethod
    def checkpoint(self) -> None:
        """Make deleted rows' bytes go away where the backend allows it (after forgetting a user)."""

    def describe(self) -> str:
        """Where the data lives, without credentials (for logs and `driftrec config`)."""
        return self.backend

    @abc.abstractmethod
    def close(self) -> None:
        """Close this thread's connection (others close with their threads or the process)."""

    def append_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows`` into ``table`` all or nothing, skipping those that conflict with a stored row,
        serialized against every transaction (so rows are committed in the order of their sequence
        numbers); returns how many were inserted."""
        with self.transaction() as conn:
            return conn.executemany(insert_sql(table, columns), rows) if rows else 0

    def ping(self) -> None:
        """One round trip to the store; raises StoreUnavailable when it does not answer."""
        self.connection().execute("SELECT 1").fetchone()

    def pseudonym_key(self) -> bytes:
        """The key of this store's user pseudonyms (made once, with the store)."""
        return bytes(self.connection().execute("SELECT value FROM meta WHERE key = 'pseudonym_key'").fetchone()[0])

    def flag(self, key: str) -> bool:
        return self.connection().execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is not None

    def set_flag(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, b"\x01"))

    def generation(self) -> int:
        """How many times events were deleted (users forgotten): derived state built from the log at an
        older generation (a saved candidate index) may hold a forgotten user and must be rebuilt."""
        row = self.connection().execute("SELECT value FROM meta WHERE key = ?", (GENERATION,)).fetchone()
        return int(bytes(row[0]).decode()) if row else 0

    def delete_user_blocking(self, user: str) -> dict[str, int]:
        """Delete every row of ``user`` in one transaction; returns rows deleted per table. Deleting events
        moves the generation on in the same transaction."""
        with self.transaction() as conn:
            rows = {
                table: conn.execute(f"DELETE FROM {table} WHERE user = ?", (user,)).rowcount for table in USER_TABLES
            }
            if rows.get("events"):
                found = conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION,)).fetchone()
                following = (int(bytes(found[0]).decode()) if found else 0) + 1
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (GENERATION, str(following).encode()),
                )
            return rows

    async def run(self, fn: Callable[..., R], *args: object) -> R:
        """Run blocking database work in a worker thread."""
        return await asyncio.to_thread(fn, *args)


def _unavailable(error: sqlite3.OperationalError) -> bool:
    """SQLite errors that are about the medium, not the statement."""
    text = str(error).lower()
    return any(s in text for s in ("disk", "full", "unable to open", "readonly", "locked", "i/o"))


@contextlib.contextmanager
def _medium_errors() -> Iterator[None]:
    """SQLite errors about the medium (disk, I/O, locks) as StoreUnavailable; others as they are."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if _unavailable(e):
            raise StoreUnavailable(f"sqlite: {e}") from e
        raise


class _SqliteConnection(Connection):
    def __init__(self, raw: sqlite3.Connection):
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with _medium_errors():
            return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with _medium_errors():
            return self.raw.executemany(sql, rows).rowcount


class SqliteDatabase(Database):
    """The embedded default: one file in the data dir.

    Each connection keeps up to ``CACHE_KIB`` of pages and reads the file through a shared memory map of up to
    ``MMAP_BYTES`` (the operating system's page cache, not per connection): with SQLite's default 2 MB cache,
    inserting into the event indexes with random users slowed ingest from 88k to 35k events/s by 3M events;
    with these, 120k to 63k (bench figures in docs/benchmarks.md)."""

    backend = "sqlite"
    local_reads = True  # a WAL reader never waits for the writer; the pages are cached or memory-mapped
    CACHE_KIB = 65_536
    MMAP_BYTES = 1 << 30

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    def connection(self) -> _SqliteConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raw = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=FULL")
            raw.execute("PRAGMA busy_timeout=30000")
            raw.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
            raw.execute(f"PRAGMA cache_size=-{self.CACHE_KIB}")
            raw.execute(f"PRAGMA mmap_size={self.MMAP_BYTES}")
            conn = self._local.conn = _SqliteConnection(raw)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.raw.close()
            self._local.conn = None

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            legacy = (
                version < 2
                and conn.execute(
                    "SELECT 1 FROM pragma_table_info('summaries') WHERE name = 'session_id' AND pk = 1"
                ).fetchone()
            )
            for script in (_MIGRATE_1_TO_2 if legacy else "", SCHEMA, _COPY_1_TO_2 if legacy else ""):
                for statement in script.split(";"):  # not executescript: it would commit mid-migration
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('pseudonym_key', ?)", (secrets.token_bytes(32),)
            )

    def schema_version(self) -> int:
        return int(self.connection().execute("PRAGMA user_version").fetchone()[0])

    def append_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """A batch that fits one statement's parameters (SQLite's build sets how many: 4,095 events at its
        default of 32,766, 31,250 at Debian's 250,000) is one multi-row INSERT, committed on its own: SQLite
        makes a statement atomic, and it holds the write lock inside that one call (the GIL let go) rather than
        from BEGIN IMMEDIATE across the Python between it, the inserts and COMMIT. There a worker thread under
        load waited for the GIL (up to the 5 ms switch interval) at every call while holding the lock, and the
        other processes' writers slept in SQLite's busy handler (1, 2, 5, 10 ... ms): with a tenth of requests
        being clicks, the clicks' p99 was ~200 ms (docs/benchmarks.md). Larger batches (bulk imports) keep
        one transaction of many rows."""
        conn = self.connection()
        if not rows or len(rows) * len(columns) > conn.raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER):
            return super().append_rows(table, columns, rows)
        sql = insert_sql(table, columns, len(rows))
        return conn.execute(sql, [value for values in rows for value in values]).rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_SqliteConnection]:
        """BEGIN IMMEDIATE ... COMMIT: one writer at a time, all or nothing."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.raw.execute("ROLLBACK")
            raise

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it: deleted bytes no longer linger in the log."""
        self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")


def open_database(settings: Settings) -> Database:
    """The store ``settings.database_url`` names; unset: SQLite at ``<data_dir>/memory.db``."""
    url = settings.database_url.get_secret_value() if settings.database_url is not None else None
    return open_database_url(url, settings.data_dir)


def open_database_url(url: str | None, data_dir: Path) -> Database:
    """The store ``url`` names: ``postgresql://...`` or ``sqlite:///path``; unset: ``<data_dir>/memory.db``."""
    if not url:
        return SqliteDatabase(data_dir / "memory.db")
    if url.startswith("sqlite:///"):
        return SqliteDatabase(Path(url.removeprefix("sqlite:///")).expanduser())
    if url.startswith(("postgresql://", "postgres://")):
        from driftrec.memory.postgres import PostgresDatabase  # psycopg only when asked for

        return PostgresDatabase(url)
    raise ValueError("database_url: must start with postgresql://, postgres:// or sqlite:///")
