"""The SQLite file behind memory: one connection per worker thread, WAL, full fsync on commit.

The schema is versioned (``PRAGMA user_version``) and migrated forward when a file is opened. Every
row is keyed by user; nothing is keyed by a client-chosen id alone (two users may both call their
first session "1"). Deleted rows are overwritten on disk (``secure_delete``), and ``checkpoint()``
truncates the write-ahead log, so forgetting a user leaves none of their bytes in the file or the WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")

SCHEMA_VERSION = 4  # v3: profile_edits; v4: api_keys

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


class Database:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
            self._local.conn = conn
        return conn

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

    def pseudonym_key(self) -> bytes:
        """The key of this store's user pseudonyms (made once, with the file)."""
        return bytes(self.connection().execute("SELECT value FROM meta WHERE key = 'pseudonym_key'").fetchone()[0])

    def flag(self, key: str) -> bool:
        return self.connection().execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is not None

    def set_flag(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, X'01')", (key,))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: one writer at a time, all or nothing."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def delete_user_blocking(self, user: str) -> dict[str, int]:
        """Delete every row of ``user`` in one transaction; returns rows deleted per table."""
        with self.transaction() as conn:
            return {
                table: conn.execute(f"DELETE FROM {table} WHERE user = ?", (user,)).rowcount for table in USER_TABLES
            }

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it: deleted bytes no longer linger in the log."""
        self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def run(self, fn: Callable[..., R], *args: object) -> R:
        """Run blocking database work in a worker thread."""
        return await asyncio.to_thread(fn, *args)
