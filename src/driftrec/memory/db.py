"""The SQLite file behind memory: one connection per worker thread, WAL, full fsync on commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")

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
    session_id TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    ended_at   REAL NOT NULL,
    body       TEXT NOT NULL,
    applied    INTEGER NOT NULL DEFAULT 0
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
"""


class Database:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.connection().executescript(SCHEMA)

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

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

    async def run(self, fn: Callable[..., R], *args: object) -> R:
        """Run blocking database work in a worker thread."""
        return await asyncio.to_thread(fn, *args)
