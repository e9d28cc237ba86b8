"""PostgreSQL behind the memory store, for several API processes or hosts on one database.

The stores write one SQL dialect (``?`` placeholders, ``ON CONFLICT``, a column named ``user``); the
connection here translates the spellings PostgreSQL wants (``%s``, ``"user"``) once per statement text.
Transactions take one advisory lock, so they serialize exactly as SQLite's ``BEGIN IMMEDIATE`` does, across
every process on the database: a profile head moves by compare-and-set inside one, so two processes can
never write the same version or skip one. Reads run outside transactions (autocommit, read committed).

The schema is versioned in ``schema_migrations``; opening runs the missing steps under the same lock, so
processes starting together migrate once.
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from driftrec.memory.db import SCHEMA_VERSION, Connection, Database, StoreUnavailable

# pg_advisory_xact_lock key of "a driftrec transaction" (arbitrary, fixed: every process must agree).
_LOCK = 0x64726966  # "drif"

# Each step brings the schema from version i to i + 1 (the list index). Version 4 matches SQLite's v4, so a
# store reports the same version on either backend; later steps are appended to both.
MIGRATIONS: list[str] = [
    "",
    "",
    "",
    """
CREATE TABLE IF NOT EXISTS events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    "user"     TEXT NOT NULL,
    item       TEXT NOT NULL,
    action     TEXT NOT NULL,
    ts         DOUBLE PRECISION NOT NULL,
    rating     DOUBLE PRECISION,
    text       TEXT,
    session_id TEXT
);
CREATE INDEX IF NOT EXISTS events_user_ts ON events ("user", ts, seq);
CREATE TABLE IF NOT EXISTS summaries (
    "user"     TEXT NOT NULL,
    session_id TEXT NOT NULL,
    ended_at   DOUBLE PRECISION NOT NULL,
    body       TEXT NOT NULL,
    applied    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY ("user", session_id)
);
CREATE INDEX IF NOT EXISTS summaries_user ON summaries ("user", ended_at);
CREATE TABLE IF NOT EXISTS statements (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "user"     TEXT NOT NULL,
    name       TEXT NOT NULL,
    polarity   TEXT NOT NULL,
    text       TEXT NOT NULL,
    ts         DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS statements_user ON statements ("user", ts);
CREATE TABLE IF NOT EXISTS chat_turns (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "user"     TEXT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    ts         DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_turns_user ON chat_turns ("user", seq);
CREATE TABLE IF NOT EXISTS chat_summaries (
    "user"     TEXT PRIMARY KEY,
    upto_seq   BIGINT NOT NULL,
    summary    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_heads (
    "user"     TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_versions (
    "user"     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY ("user", version)
);
CREATE TABLE IF NOT EXISTS profile_edits (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "user"     TEXT NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    action     TEXT NOT NULL,
    ts         DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS profile_edits_user ON profile_edits ("user", seq);
CREATE TABLE IF NOT EXISTS upkeep (
    "user"     TEXT PRIMARY KEY,
    due_at     DOUBLE PRECISION NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    error      TEXT
);
CREATE INDEX IF NOT EXISTS upkeep_due ON upkeep (due_at);
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    "user"     TEXT,
    name       TEXT NOT NULL,
    created    DOUBLE PRECISION NOT NULL,
    revoked    DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys ("user");
CREATE TABLE IF NOT EXISTS meta (
    key        TEXT PRIMARY KEY,
    value      BYTEA NOT NULL
);
""",
]
assert len(MIGRATIONS) == SCHEMA_VERSION

_LITERAL = re.compile(r"('(?:[^']|'')*')")
_USER = re.compile(r'(?<!["\w])user(?!["\w])')


@functools.lru_cache(maxsize=512)
def translate(sql: str, *, parameters: bool = True) -> str:
    """The stores' SQL in PostgreSQL's spelling: ``?`` → ``%s`` and ``user`` → ``"user"`` outside literals.

    With ``parameters`` psycopg reads every ``%`` as a placeholder, literals included, so each literal
    ``%`` is doubled; without, the text goes as written."""
    parts = _LITERAL.split(sql)
    for i, part in enumerate(parts):
        if parameters:
            part = part.replace("%", "%%")
        if i % 2 == 0:  # even parts are outside quotes
            part = _USER.sub('"user"', part.replace("?", "%s"))
        parts[i] = part
    return "".join(parts)


def redact(url: str) -> str:
    """``url`` without its password (for logs and error messages)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _PgConnection(Connection):
    def __init__(self, raw: psycopg.Connection, where: str):
        self.raw = raw
        self.where = where

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        try:
            if not params:
                return self.raw.execute(translate(sql, parameters=False))  # type: ignore[arg-type]
            return self.raw.execute(translate(sql), params)  # type: ignore[arg-type]
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"postgresql at {self.where}: {e}") from e

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        try:
            with self.raw.cursor() as cursor:
                cursor.executemany(translate(sql), list(rows))
                return cursor.rowcount
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"postgresql at {self.where}: {e}") from e


class PostgresDatabase(Database):
    """The shared store: several processes or hosts, one database."""

    backend = "postgresql"

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0):
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()
        self._migrate()

    def describe(self) -> str:
        return redact(self.url)

    def connection(self) -> _PgConnection:
        conn: _PgConnection | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.raw.closed or conn.raw.broken):
            conn = None  # the server restarted or the network dropped: reconnect
        if conn is None:
            try:
                raw = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout_s)))
            except psycopg.OperationalError as e:
                raise StoreUnavailable(f"postgresql at {self.describe()}: {e}") from e
            conn = self._local.conn = _PgConnection(raw, self.describe())
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.raw.close()
            self._local.conn = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_PgConnection]:
        """BEGIN; take the driftrec lock; ...; COMMIT (ROLLBACK on any error)."""
        conn = self.connection()
        try:
            with conn.raw.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
                yield conn
        except psycopg.OperationalError as e:  # the COMMIT itself failed
            raise StoreUnavailable(f"postgresql at {self.describe()}: {e}") from e

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            if done > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database at {self.describe()} is at schema v{done}, newer than this driftrec "
                    f"(v{SCHEMA_VERSION}): upgrade driftrec"
                )
            for version in range(done + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        conn.raw.execute(statement)  # type: ignore[arg-type] # DDL: already PostgreSQL's spelling
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('pseudonym_key', ?) ON CONFLICT DO NOTHING",
                (secrets.token_bytes(32),),
            )

    def schema_version(self) -> int:
        return int(self.connection().execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])

    def checkpoint(self) -> None:
        """VACUUM the user tables so deleted rows' space is reclaimed (bytes may stay in data files and WAL
        until PostgreSQL reuses them: see docs/security.md)."""
        from driftrec.memory.db import USER_TABLES

        conn = self.connection()
        for table in USER_TABLES:
            conn.execute(f"VACUUM {table}")
