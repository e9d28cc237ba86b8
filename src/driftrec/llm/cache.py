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
        self._conn().execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def _get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _put(self, key: str, body: str) -> None:
        self._conn().execute("INSERT OR REPLACE INTO responses (key, body) VALUES (?, ?)", (key, body))

    async def get(self, key: str) -> str | None:
        body = await asyncio.to_thread(self._get, key)
        if body is None:
            self.misses += 1
        else:
            self.hits += 1
        return body

    async def put(self, key: str, body: str) -> None:
        await asyncio.to_thread(self._put, key, body)
