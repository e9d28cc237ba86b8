"""Versioned long-term profiles (Chroma ``profiles``) and session summaries (SQLite + Chroma ``sessions``).

Every profile update writes a new version; none is ever overwritten. A version is written to Chroma
first (document = the readable profile, embedding = u_l for retrieval, metadata = user, version, time
and the full JSON) and made current last, by moving the user's head pointer in SQLite with an
optimistic check on the version it replaces. A crash between the two leaves the previous version
current and intact; the orphan is overwritten by the next attempt, which computes the same id. Two
concurrent updates cannot both win: the loser's pointer move fails and it is told so.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
from chromadb.api import ClientAPI

from driftrec import failpoints
from driftrec.memory.db import Database
from driftrec.models import InterestProfile, SessionSummary
from driftrec.retrieval.embeddings import Embedder
from driftrec.retrieval.store import open_collection


class StaleProfileError(RuntimeError):
    """Another update made a newer version current first; re-read and try again."""


def profile_document(profile: InterestProfile) -> str:
    """The readable profile: what the LLM reads and what is embedded as u_l."""
    lines = [f"Long-term interests of user {profile.user} (version {profile.version}):"]
    for interest in sorted(profile.interests, key=lambda i: -i.weight):
        lines.append(f"- {interest.name} (weight {interest.weight:.2f})")
    if profile.dislikes:
        lines.append("Dislikes: " + ", ".join(d.name for d in profile.dislikes))
    if profile.summary:
        lines.append(profile.summary)
    return "\n".join(lines)


def summary_document(summary: SessionSummary, titles: dict[str, str]) -> str:
    liked = ", ".join(titles.get(e.item, e.item) for e in summary.liked)
    disliked = ", ".join(titles.get(e.item, e.item) for e in summary.disliked)
    parts = [
        f"Themes: {', '.join(summary.themes)}" if summary.themes else "",
        f"Liked: {liked}" if liked else "",
        f"Disliked: {disliked}" if disliked else "",
        f"Intent: {summary.intent}" if summary.intent else "",
    ]
    return ". ".join(p for p in parts if p) or "(empty session)"


class ProfileStore:
    def __init__(self, db: Database, client: ClientAPI, embedder: Embedder, collection: str):
        self.db = db
        self.embedder = embedder
        self.collection = open_collection(client, collection, embedder)

    # -- reading ----------------------------------------------------------------------------------

    def _head(self, user: str) -> int | None:
        row = self.db.connection().execute("SELECT version FROM profile_heads WHERE user = ?", (user,)).fetchone()
        return None if row is None else int(row[0])

    def _get(self, user: str, version: int) -> tuple[InterestProfile, np.ndarray] | None:
        got = self.collection.get(ids=[f"{user}@v{version}"], include=["metadatas", "embeddings"])
        if not got["ids"]:
            return None
        return (
            InterestProfile.model_validate_json(got["metadatas"][0]["profile"]),
            np.asarray(got["embeddings"][0], dtype=np.float32),
        )

    def current_blocking(self, user: str) -> tuple[InterestProfile, np.ndarray | None]:
        """The current version and its vector; a new user gets an empty profile (version 0, no vector)."""
        head = self._head(user)
        if head is not None:
            found = self._get(user, head)
            if found is None:
                raise RuntimeError(f"profile {user}@v{head} is current but missing from Chroma")
            return found
        return InterestProfile(user=user, version=0, updated_at=datetime.fromtimestamp(0, UTC)), None

    async def current(self, user: str) -> tuple[InterestProfile, np.ndarray | None]:
        return await asyncio.to_thread(self.current_blocking, user)

    async def version(self, user: str, version: int) -> tuple[InterestProfile, np.ndarray] | None:
        """One stored version and its vector (None if it was never written)."""
        return await asyncio.to_thread(self._get, user, version)

    def history_blocking(self, user: str) -> list[InterestProfile]:
        """Every committed version (not orphans beyond the head), oldest first."""
        head = self._head(user)
        if head is None:
            return []
        got = self.collection.get(where={"user": user}, include=["metadatas"])
        versions = [InterestProfile.model_validate_json(m["profile"]) for m in got["metadatas"]]
        return sorted((p for p in versions if p.version <= head), key=lambda p: p.version)

    async def history(self, user: str) -> list[InterestProfile]:
        return await asyncio.to_thread(self.history_blocking, user)

    # -- writing ----------------------------------------------------------------------------------

    def commit_blocking(self, profile: InterestProfile, expected_head: int | None) -> InterestProfile:
        """Write ``profile`` as a new version, then make it current if the head is still ``expected_head``."""
        document = profile_document(profile)
        vector = self.embedder.embed_passages([document])[0]
        self.collection.upsert(
            ids=[f"{profile.user}@v{profile.version}"],
            documents=[document],
            embeddings=[vector.tolist()],
            metadatas=[
                {
                    "user": profile.user,
                    "version": profile.version,
                    "updated_at": profile.updated_at.timestamp(),
                    "profile": profile.model_dump_json(),
                }
            ],
        )
        failpoints.hit("profile.after_version_write")  # the worst moment to die: written, not yet current
        with self.db.transaction() as conn:
            row = conn.execute("SELECT version FROM profile_heads WHERE user = ?", (profile.user,)).fetchone()
            head = None if row is None else int(row[0])
            if head != expected_head:
                raise StaleProfileError(f"{profile.user}: head moved from v{expected_head} to v{head}")
            conn.execute(
                "INSERT INTO profile_heads (user, version, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(user) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                (profile.user, profile.version, profile.updated_at.timestamp()),
            )
        return profile

    async def commit(self, profile: InterestProfile, expected_head: int | None) -> InterestProfile:
        return await asyncio.to_thread(self.commit_blocking, profile, expected_head)

    async def rollback(self, user: str, version: int) -> InterestProfile:
        """Make an old version's content current again, as a new version (history stays append-only)."""
        current, _ = await self.current(user)
        old = next((p for p in await self.history(user) if p.version == version), None)
        if old is None:
            raise ValueError(f"{user} has no profile version {version}")
        restored = old.model_copy(update={"version": current.version + 1, "updated_at": datetime.now(UTC)})
        return await self.commit(restored, current.version if current.version else None)

    def delete_user_blocking(self, user: str) -> None:
        self.collection.delete(where={"user": user})
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM profile_heads WHERE user = ?", (user,))


def diff_profiles(old: InterestProfile, new: InterestProfile) -> dict[str, object]:
    """What changed between two versions: added, removed, and re-weighted interests; dislike changes."""
    before = {i.name: i.weight for i in old.interests}
    after = {i.name: i.weight for i in new.interests}
    return {
        "from": old.version,
        "to": new.version,
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": {
            n: (round(before[n], 3), round(after[n], 3))
            for n in sorted(set(before) & set(after))
            if abs(before[n] - after[n]) > 1e-9
        },
        "dislikes_added": sorted({d.name for d in new.dislikes} - {d.name for d in old.dislikes}),
        "dislikes_removed": sorted({d.name for d in old.dislikes} - {d.name for d in new.dislikes}),
    }


class SummaryStore:
    """Session summaries: durable rows in SQLite, and documents in Chroma for episodic recall."""

    def __init__(self, db: Database, client: ClientAPI, embedder: Embedder, collection: str):
        self.db = db
        self.embedder = embedder
        self.collection = open_collection(client, collection, embedder)

    def save_blocking(self, summary: SessionSummary, ended_at: datetime, titles: dict[str, str]) -> None:
        document = summary_document(summary, titles)
        self.collection.upsert(
            ids=[summary.session_id],
            documents=[document],
            embeddings=[self.embedder.embed_passages([document])[0].tolist()],
            metadatas=[{"user": summary.user, "ended_at": ended_at.timestamp()}],
        )
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO summaries (session_id, user, ended_at, body, applied) "
                "VALUES (?, ?, ?, ?, COALESCE((SELECT applied FROM summaries WHERE session_id = ?), 0))",
                (summary.session_id, summary.user, ended_at.timestamp(), summary.model_dump_json(), summary.session_id),
            )

    def summarized_blocking(self, user: str) -> set[str]:
        rows = self.db.connection().execute("SELECT session_id FROM summaries WHERE user = ?", (user,)).fetchall()
        return {r[0] for r in rows}

    def pending_blocking(self, user: str) -> list[SessionSummary]:
        """Summaries not yet folded into the profile, oldest first."""
        rows = (
            self.db.connection()
            .execute("SELECT body FROM summaries WHERE user = ? AND applied = 0 ORDER BY ended_at", (user,))
            .fetchall()
        )
        return [SessionSummary.model_validate_json(r[0]) for r in rows]

    def recent_blocking(self, user: str, n: int = 3) -> list[SessionSummary]:
        """The latest ``n`` summaries, oldest first: the short-term context the ranker reads."""
        rows = (
            self.db.connection()
            .execute("SELECT body FROM summaries WHERE user = ? ORDER BY ended_at DESC LIMIT ?", (user, n))
            .fetchall()
        )
        return [SessionSummary.model_validate_json(r[0]) for r in reversed(rows)]

    def mark_applied_blocking(self, session_ids: list[str]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("UPDATE summaries SET applied = 1 WHERE session_id = ?", [(s,) for s in session_ids])

    def recall_blocking(self, user: str, text: str, n: int = 3) -> list[tuple[str, str]]:
        """Past sessions of this user most similar to ``text``: (session_id, document)."""
        if not self.collection.count():
            return []
        query = self.embedder.embed_queries([text])[0]
        got = self.collection.query(
            query_embeddings=[query.tolist()], n_results=n, where={"user": user}, include=["documents"]
        )
        return list(zip(got["ids"][0], got["documents"][0], strict=True))

    def delete_user_blocking(self, user: str) -> None:
        self.collection.delete(where={"user": user})
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM summaries WHERE user = ?", (user,))
