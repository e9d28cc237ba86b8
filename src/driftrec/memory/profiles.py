"""Versioned long-term profiles and session summaries: SQLite holds the text, Chroma the vectors.

Every profile update writes a new version; none is ever overwritten. The version's vector (u_l) goes
to Chroma ``profiles`` first; then one SQLite transaction stores the version's body and moves the
user's head pointer, with an optimistic check on the version it replaces. A crash before that
transaction leaves the previous version current and intact (the orphan vector is overwritten by the
next attempt, which computes the same id); two concurrent updates cannot both win.

Chroma holds no user id and no user text: ids and metadata carry the user's pseudonym (see
privacy.py), documents are genre words and titles. A user's rows in Chroma are found by that
pseudonym, so forgetting them needs nothing Chroma may have kept in its own logs.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
from chromadb.api import ClientAPI

from driftrec import failpoints
from driftrec.memory.db import Database
from driftrec.models import Interest, InterestProfile, SessionSummary
from driftrec.retrieval.embeddings import Embedder
from driftrec.retrieval.store import open_collection

# Memory collections are small and written rarely: persist Chroma's vector index after every couple of
# writes, so its write-ahead queue (which keeps deleted documents until then) is purged promptly.
MEMORY_HNSW = {"sync_threshold": 2, "batch_size": 2}


class StaleProfileError(RuntimeError):
    """Another update made a newer version current first; re-read and try again."""


def _describe(interest: Interest) -> str:
    counts = (
        f"{interest.positive} liked, {interest.negative} disliked" if interest.positive or interest.negative else ""
    )
    said = {"stated": "said in chat", "edit": "set by the user"}.get(interest.source, "")
    return f"{interest.name} (" + "; ".join(p for p in (f"weight {interest.weight:.2f}", counts, said) if p) + ")"


def profile_document(profile: InterestProfile) -> str:
    """The readable profile the LLM reads: interests with their weight and the evidence behind them."""
    lines = ["Long-term interests:"]
    lines += [f"- {_describe(i)}" for i in sorted(profile.interests, key=lambda i: -i.weight)] or ["- (none yet)"]
    if profile.dislikes:
        lines.append("Dislikes: " + ", ".join(_describe(d) for d in profile.dislikes))
    if profile.summary:
        lines.append(profile.summary)
    return "\n".join(lines)


def interests_document(profile: InterestProfile) -> str:
    """What u_l embeds: the interests alone, strongest first (no id, no version, no dislikes), so the same
    interests always give the same vector and a dislike never pulls its genre closer."""
    ranked = sorted(profile.interests, key=lambda i: (-round(i.weight, 1), i.name))
    return "Interests: " + ", ".join(f"{i.name} ({i.weight:.1f})" for i in ranked) if ranked else "Interests: none"


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
    def __init__(self, db: Database, client: ClientAPI, embedder: Embedder, collection: str, tag: Callable[[str], str]):
        self.db = db
        self.embedder = embedder
        self.tag = tag
        self.collection = open_collection(client, collection, embedder, hnsw=MEMORY_HNSW)

    # -- reading ----------------------------------------------------------------------------------

    def _head(self, user: str) -> int | None:
        row = self.db.connection().execute("SELECT version FROM profile_heads WHERE user = ?", (user,)).fetchone()
        return None if row is None else int(row[0])

    def _vector_id(self, user: str, version: int) -> str:
        return f"{self.tag(user)}@v{version}"

    def _get(self, user: str, version: int, *, vector: bool = True) -> tuple[InterestProfile, np.ndarray] | None:
        row = (
            self.db.connection()
            .execute("SELECT body FROM profile_versions WHERE user = ? AND version = ?", (user, version))
            .fetchone()
        )
        if row is None:
            return None
        if not vector:
            return InterestProfile.model_validate_json(row[0]), np.zeros(0, np.float32)
        got = self.collection.get(ids=[self._vector_id(user, version)], include=["embeddings"])
        if not got["ids"]:
            raise RuntimeError(f"profile v{version} of a user is stored but its vector is missing from Chroma")
        return InterestProfile.model_validate_json(row[0]), np.asarray(got["embeddings"][0], dtype=np.float32)

    def current_blocking(self, user: str, *, vector: bool = True) -> tuple[InterestProfile, np.ndarray | None]:
        """The current version and its vector (``vector=False``: the body alone, no Chroma read, vector None);
        a new user gets an empty profile (version 0, no vector)."""
        head = self._head(user)
        if head is not None:
            found = self._get(user, head, vector=vector)
            if found is None:
                raise RuntimeError(f"profile v{head} of a user is current but missing")
            return found if vector else (found[0], None)
        return self.empty(user), None

    @staticmethod
    def empty(user: str) -> InterestProfile:
        """A new user's profile: version 0, nothing in it."""
        return InterestProfile(user=user, version=0, updated_at=datetime.fromtimestamp(0, UTC))

    async def current(self, user: str, *, vector: bool = True) -> tuple[InterestProfile, np.ndarray | None]:
        return await asyncio.to_thread(functools.partial(self.current_blocking, user, vector=vector))

    async def version(self, user: str, version: int) -> tuple[InterestProfile, np.ndarray] | None:
        """One stored version and its vector (None if it was never made current)."""
        return await asyncio.to_thread(self._get, user, version)

    def history_blocking(self, user: str) -> list[InterestProfile]:
        """Every committed version, oldest first."""
        rows = (
            self.db.connection()
            .execute("SELECT body FROM profile_versions WHERE user = ? ORDER BY version", (user,))
            .fetchall()
        )
        return [InterestProfile.model_validate_json(r[0]) for r in rows]

    async def history(self, user: str) -> list[InterestProfile]:
        return await asyncio.to_thread(self.history_blocking, user)

    # -- writing ----------------------------------------------------------------------------------

    def commit_blocking(
        self, profile: InterestProfile, expected_head: int | None, applied: Sequence[str] = ()
    ) -> InterestProfile:
        """Write ``profile`` as a new version, then make it current if the head is still ``expected_head``.

        ``applied``: the session summaries folded into it, marked applied in the same transaction that moves
        the head, so no other process can fold them a second time in between."""
        document = interests_document(profile)
        vector = self.embedder.embed_passages([document])[0]
        self.collection.upsert(
            ids=[self._vector_id(profile.user, profile.version)],
            documents=[document],
            embeddings=[vector.tolist()],
            metadatas=[{"subject": self.tag(profile.user), "version": profile.version}],
        )
        failpoints.hit("profile.after_version_write")  # the worst moment to die: written, not yet current
        with self.db.transaction() as conn:
            row = conn.execute("SELECT version FROM profile_heads WHERE user = ?", (profile.user,)).fetchone()
            head = None if row is None else int(row[0])
            if head != expected_head:
                raise StaleProfileError(f"head moved from v{expected_head} to v{head}")
            conn.execute(
                "INSERT INTO profile_versions (user, version, body) VALUES (?, ?, ?) "
                "ON CONFLICT(user, version) DO UPDATE SET body = excluded.body",
                (profile.user, profile.version, profile.model_dump_json()),
            )
            failpoints.hit("profile.before_head_move")
            conn.execute(
                "INSERT INTO profile_heads (user, version, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(user) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                (profile.user, profile.version, profile.updated_at.timestamp()),
            )
            if applied:
                conn.executemany(
                    "UPDATE summaries SET applied = 1 WHERE user = ? AND session_id = ?",
                    [(profile.user, s) for s in applied],
                )
        return profile

    async def commit(
        self, profile: InterestProfile, expected_head: int | None, applied: Sequence[str] = ()
    ) -> InterestProfile:
        return await asyncio.to_thread(self.commit_blocking, profile, expected_head, applied)

    async def rollback(self, user: str, version: int) -> InterestProfile:
        """Make an old version's content current again, as a new version (history stays append-only)."""
        current, _ = await self.current(user)
        old = next((p for p in await self.history(user) if p.version == version), None)
        if old is None:
            raise ValueError(f"no profile version {version}")
        restored = old.model_copy(update={"version": current.version + 1, "updated_at": datetime.now(UTC)})
        return await self.commit(restored, current.version if current.version else None)

    def delete_vectors_blocking(self, user: str) -> int:
        """Delete every version's vector from Chroma (the SQLite rows go with the user's other rows)."""
        return _delete_subject(self.collection, self.tag(user))

    def migrate_legacy_blocking(self) -> int:
        """Bring profiles written by driftrec 0.1 into this layout; returns how many versions moved.

        0.1 kept each version's body in Chroma metadata under the id ``<user>@v<n>`` (the user id in
        clear); here the body goes to SQLite and the vector is re-keyed by the pseudonym."""
        got = self.collection.get(where={"user": {"$ne": ""}}, include=["metadatas", "embeddings"])
        moved = 0
        for vector_id, meta, vector in zip(got["ids"], got["metadatas"], got["embeddings"], strict=True):
            if "user" not in meta or "profile" not in meta:  # Chroma's $ne also matches a missing key
                continue
            profile = InterestProfile.model_validate_json(meta["profile"])
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO profile_versions (user, version, body) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (profile.user, profile.version, profile.model_dump_json()),
                )
            self.collection.upsert(
                ids=[self._vector_id(profile.user, profile.version)],
                embeddings=[list(vector)],
                documents=[interests_document(profile)],
                metadatas=[{"subject": self.tag(profile.user), "version": profile.version}],
            )
            self.collection.delete(ids=[vector_id])
            moved += 1
        return moved


def _delete_subject(collection: object, tag: str) -> int:
    ids = collection.get(where={"subject": tag}, include=[])["ids"]  # type: ignore[attr-defined]
    if ids:
        collection.delete(ids=ids)  # type: ignore[attr-defined]
    return len(ids)


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
    """Session summaries: durable rows in SQLite keyed by (user, session), vectors in Chroma for recall."""

    def __init__(self, db: Database, client: ClientAPI, embedder: Embedder, collection: str, tag: Callable[[str], str]):
        self.db = db
        self.embedder = embedder
        self.tag = tag
        self.collection = open_collection(client, collection, embedder, hnsw=MEMORY_HNSW)

    def _vector_id(self, user: str, session_id: str) -> str:
        return f"{self.tag(user)}:{hashlib.sha256(session_id.encode()).hexdigest()[:24]}"

    def save_blocking(self, summary: SessionSummary, ended_at: datetime, titles: dict[str, str]) -> None:
        document = summary_document(summary, titles)
        self.collection.upsert(
            ids=[self._vector_id(summary.user, summary.session_id)],
            documents=[document],
            embeddings=[self.embedder.embed_passages([document])[0].tolist()],
            metadatas=[{"subject": self.tag(summary.user), "ended_at": ended_at.timestamp()}],
        )
        with self.db.transaction() as conn:  # a re-summarized session keeps its applied flag
            conn.execute(
                "INSERT INTO summaries (user, session_id, ended_at, body, applied) VALUES (?, ?, ?, ?, 0) "
                "ON CONFLICT(user, session_id) DO UPDATE SET ended_at = excluded.ended_at, body = excluded.body",
                (summary.user, summary.session_id, ended_at.timestamp(), summary.model_dump_json()),
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

    def recall_blocking(self, user: str, text: str, n: int = 3) -> list[tuple[str, str]]:
        """Past sessions of this user most similar to ``text``: (session_id, document)."""
        by_vector_id = {self._vector_id(user, s): s for s in self.summarized_blocking(user)}
        if not by_vector_id:
            return []
        query = self.embedder.embed_queries([text])[0]
        got = self.collection.query(
            query_embeddings=[query.tolist()],
            n_results=min(n, len(by_vector_id)),
            where={"subject": self.tag(user)},
            include=["documents"],
        )
        return [
            (by_vector_id[i], doc)
            for i, doc in zip(got["ids"][0], got["documents"][0], strict=True)
            if i in by_vector_id
        ]

    def delete_vectors_blocking(self, user: str) -> int:
        return _delete_subject(self.collection, self.tag(user))

    def migrate_legacy_blocking(self, titles: dict[str, str]) -> int:
        """Re-key session vectors written by driftrec 0.1 (id = the client's session id, metadata = the
        user id in clear) from the SQLite rows; returns how many moved."""
        got = self.collection.get(where={"user": {"$ne": ""}}, include=["metadatas"])
        legacy = [i for i, meta in zip(got["ids"], got["metadatas"], strict=True) if "user" in meta]
        if not legacy:
            return 0
        self.collection.delete(ids=legacy)
        rows = self.db.connection().execute("SELECT body, ended_at FROM summaries").fetchall()
        for body, ended_at in rows:
            self.save_blocking(SessionSummary.model_validate_json(body), datetime.fromtimestamp(ended_at, UTC), titles)
        return len(legacy)
