"""Chat state that outlives a process: what the user stated, and the conversation so far.

Stated preferences ("I'm tired of horror") are short-term signals: they steer recommendations for
``hours`` after they were said (each carries its ``expires_at``), and the next profile update reads
them, in its prompt and as evidence (memory/evidence.py). Conversation turns are
kept in full; when they no longer fit the prompt budget, older turns are folded into a running summary
(written by the LLM, see agent/chat.py) and only the summary and the latest turns are sent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from driftrec.memory.db import Database
from driftrec.models import ChatTurn, StatedPreference


class StatementStore:
    def __init__(self, db: Database):
        self.db = db

    def _add(self, statements: list[StatedPreference]) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO statements (user, name, polarity, text, ts) VALUES (?, ?, ?, ?, ?)",
                [(s.user, s.name, s.polarity, s.text, s.created_at.timestamp()) for s in statements],
            )

    async def add(self, statements: list[StatedPreference]) -> None:
        if statements:
            await asyncio.to_thread(self._add, statements)

    def _active(self, user: str, since: float, hours: float) -> list[StatedPreference]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT name, polarity, text, ts FROM statements WHERE user = ? AND ts >= ? ORDER BY seq", (user, since)
            )
            .fetchall()
        )
        latest: dict[str, StatedPreference] = {}
        for row in rows:  # the latest statement about a name wins
            latest.pop(row[0], None)
            latest[row[0]] = _statement(user, *row, hours=hours)
        return list(latest.values())

    def active_blocking(self, user: str, now: datetime, hours: float) -> list[StatedPreference]:
        """Statements made in the last ``hours``, the latest per name, each with when it expires."""
        return self._active(user, (now - timedelta(hours=hours)).timestamp(), hours)

    async def active(self, user: str, now: datetime, hours: float) -> list[StatedPreference]:
        return await asyncio.to_thread(self.active_blocking, user, now, hours)

    def _between(self, user: str, since: float, until: float) -> list[StatedPreference]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT name, polarity, text, ts FROM statements WHERE user = ? AND ts > ? AND ts <= ? ORDER BY seq",
                (user, since, until),
            )
            .fetchall()
        )
        return [_statement(user, *row) for row in rows]

    async def between(self, user: str, since: datetime, until: datetime) -> list[StatedPreference]:
        """Every statement made after ``since`` up to ``until``: evidence for the next profile update."""
        return await asyncio.to_thread(self._between, user, since.timestamp(), until.timestamp())


def _statement(
    user: str, name: str, polarity: str, text: str, ts: float, *, hours: float | None = None
) -> StatedPreference:
    said = datetime.fromtimestamp(ts, UTC)
    return StatedPreference(
        user=user,
        name=name,
        polarity=polarity,  # type: ignore[arg-type]
        text=text,
        created_at=said,
        expires_at=said + timedelta(hours=hours) if hours is not None else None,
    )


class ConversationStore:
    def __init__(self, db: Database):
        self.db = db

    def _append(self, user: str, turns: list[ChatTurn]) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO chat_turns (user, role, content, ts) VALUES (?, ?, ?, ?)",
                [(user, t.role, t.content, t.created_at.timestamp()) for t in turns],
            )

    async def append(self, user: str, *turns: ChatTurn) -> None:
        await asyncio.to_thread(self._append, user, list(turns))

    def _state(self, user: str) -> tuple[str, list[tuple[int, ChatTurn]]]:
        conn = self.db.connection()
        row = conn.execute("SELECT upto_seq, summary FROM chat_summaries WHERE user = ?", (user,)).fetchone()
        upto, summary = (row[0], row[1]) if row else (0, "")
        rows = conn.execute(
            "SELECT seq, role, content, ts FROM chat_turns WHERE user = ? AND seq > ? ORDER BY seq", (user, upto)
        ).fetchall()
        turns = [
            (seq, ChatTurn(role=role, content=content, created_at=datetime.fromtimestamp(ts).astimezone()))
            for seq, role, content, ts in rows
        ]
        return summary, turns

    async def state(self, user: str) -> tuple[str, list[tuple[int, ChatTurn]]]:
        """The running summary of older turns, and the turns after it (with their sequence numbers)."""
        return await asyncio.to_thread(self._state, user)

    def _fold(self, user: str, upto_seq: int, summary: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO chat_summaries (user, upto_seq, summary) VALUES (?, ?, ?) "
                "ON CONFLICT(user) DO UPDATE SET upto_seq = excluded.upto_seq, summary = excluded.summary",
                (user, upto_seq, summary),
            )

    async def fold(self, user: str, upto_seq: int, summary: str) -> None:
        """Replace every turn up to ``upto_seq`` by ``summary`` in what is sent to the LLM (rows stay)."""
        await asyncio.to_thread(self._fold, user, upto_seq, summary)
