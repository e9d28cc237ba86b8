"""An on-disk cache of LLM responses, keyed by model, call kind, messages and sampling parameters.

Evaluation runs send the same prompts again and again (re-runs, resumed runs, weight sweeps); with
temperature 0 and a fixed seed the answer is the same, so a re-run costs a lookup. SQLite (WAL) in a
worker thread: safe across processes, never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cache_key(model: str, kind: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    body = json.dumps([model, kind, messages, params], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        conn = self._conn()
        conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT NOT NULL, subject TEXT)")
        if not any(row[1] == "subject" for row in conn.execute("PRAGMA table_info(responses)")):
            conn.execute("ALTER TABLE responses ADD COLUMN subject TEXT")  # caches made before driftrec 0.2
        conn.execute("CREATE INDEX IF NOT EXISTS responses_subject ON responses (subject)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA secure_delete=ON")
            self._local.conn = conn
        return conn

    def _get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _put(self, key: str, body: str, subject: str | None) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, body, subject) VALUES (?, ?, ?)", (key, body, subject)
        )

    def _forget(self, subject: str) -> int:
        conn = self._conn()
        count = conn.execute("DELETE FROM responses WHERE subject = ?", (subject,)).rowcount
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count

    async def get(self, key: str) -> str | None:
        body = await asyncio.to_thread(self._get, key)
        if body is None:
            self.misses += 1
        else:
            self.hits += 1
        return body

    async def put(self, key: str, body: str, subject: str | None = None) -> None:
        """Store a response; ``subject`` is the pseudonym of the user it was made for, if any."""
        await asyncio.to_thread(self._put, key, body, subject)

    async def forget(self, subject: str) -> int:
        """Delete the subject's responses (zeroed on disk, the WAL truncated); returns how many."""
        return await asyncio.to_thread(self._forget, subject)
