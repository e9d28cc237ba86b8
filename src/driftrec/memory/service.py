"""Memory as one object: events in, sessions and summaries out, a profile that drifts.

``observe`` records events durably. ``refresh_profile`` summarizes closed sessions not yet summarized
(concurrently: vLLM batches them), then folds the pending summaries into a new profile version: as
many at a time as fit the context window, one LLM proposal per batch, each proposal grounded in the
user's own events of that window (evidence.py) before the blend/decay rule applies it (drift.py). The
result is committed once (serialized per user in this process, guarded by the optimistic head check
across processes). Any failure leaves the current profile as it was and is reported as a failure; the
summaries stay pending and the next refresh retries them.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np

from driftrec.config import MemorySettings, Settings
from driftrec.llm import LLM, LLMError
from driftrec.llm.cache import ResponseCache
from driftrec.llm.client import JsonlLog
from driftrec.memory.conversation import ConversationStore, StatementStore
from driftrec.memory.db import Database, open_database
from driftrec.memory.drift import DriftPolicy, apply_proposal
from driftrec.memory.edits import EditStore, uphold
from driftrec.memory.events import EventStore, history_from_rows
from driftrec.memory.evidence import Rejection, claimable, gather, ground
from driftrec.memory.keys import KeyStore
from driftrec.memory.llm_steps import propose_update, summarize_session
from driftrec.memory.profiles import ProfileStore, StaleProfileError, SummaryStore
from driftrec.memory.sessions import open_session, sessionize
from driftrec.models import (
    History,
    Interaction,
    InterestProfile,
    Item,
    ProfileEdit,
    Session,
    SessionSummary,
    StatedPreference,
)
from driftrec.privacy import acting_for, pseudonym
from driftrec.prompts import PromptTooLong
from driftrec.retrieval import chroma_client, make_embedder
from driftrec.retrieval.store import VectorStoreUnavailable, collection_name

log = logging.getLogger(__name__)

# Memory.state_blocking: one single-row aggregate per store over its per-user index, joined, one round trip
# on either backend. A count and a maximum share one aggregate: alone, PostgreSQL would find MAX(seq) by
# walking the primary key backwards until the user's latest row — most of the table for a user of old.
_STATE_FROM = (
    " FROM (SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS top FROM events WHERE user = ?) AS e,"
    " (SELECT MAX(version) AS version, MAX(updated_at) AS at FROM profile_heads WHERE user = ?) AS h,"
    " (SELECT COUNT(*) AS n, COALESCE(SUM(ended_at), 0) AS ends FROM summaries WHERE user = ?) AS s,"
    " (SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS top FROM statements WHERE user = ? AND ts >= ?) AS t,"
    " (SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS top FROM profile_edits WHERE user = ?) AS d"
)
_STATE_COLUMNS = "SELECT e.n, e.top, h.version, h.at, s.n, s.ends, t.n, t.top, d.n, d.top"
_STATE = _STATE_COLUMNS + _STATE_FROM
# PostgreSQL: the state and, in the same statement (one snapshot), the user's events past a sequence number:
# the state's row (its event count never NULL) and then one row per event, each padded with NULLs where the
# other kind has its columns. The events' part is a probe of the (user, seq) index: ~20 µs when nothing is new.
_EVENT_COLUMNS = "seq, event_id, user, item, action, ts, rating, text, session_id"
_STATE_WITH_TAIL = (
    _STATE_COLUMNS
    + ", CAST(NULL AS BIGINT), CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT),"
    " CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS TEXT), CAST(NULL AS TEXT)"
    + _STATE_FROM
    + " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    + _EVENT_COLUMNS
    + " FROM events WHERE user = ? AND seq > ?"
)
# where each store's part of a ``_STATE`` row starts (events: count and latest seq; the profile head's version)
_EVENTS, _PROFILE, _SUMMARIES, _STATED, _EDITS = 0, 2, 4, 6, 8
_STATE_WIDTH = 10
_TIME_ORDER = operator.itemgetter(5, 0)  # an event row's (ts, seq): the history's order


def _events_only(state: tuple) -> bool:
    """Whether the user of a ``_STATE`` row has nothing stored but events (no profile head, summaries,
    stated preferences or edits)."""
    return not any(state[i] for i in (_PROFILE, _SUMMARIES, _STATED, _EDITS))


@dataclass
class RefreshResult:
    """What one refresh did. ``error`` is set whenever any step failed, even if others succeeded."""

    profile: InterestProfile
    updated: bool
    summarized: int
    failed: int = 0  # session summaries that failed (they are retried next time)
    remaining: int = 0  # closed sessions left for a later refresh (``max_sessions``)
    folded: int = 0  # summaries folded into the new version
    claims: int = 0  # interests and dislikes the LLM proposed
    rejected: list[Rejection] = field(default_factory=list)  # of those, the ones the evidence did not back
    error: str | None = None
    error_type: str | None = None
    prompts: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """updated | unchanged | partial (updated, but some step failed) | failed."""
        if self.error is None:
            return "updated" if self.updated else "unchanged"
        return "partial" if self.updated else "failed"


@dataclass(frozen=True)
class RankingInputs:
    """What memory holds about one user that a recommendation reads."""

    history_rows: list[tuple]  # stored rows; ``history`` builds the events on first use
    profile: InterestProfile
    vector: np.ndarray | None
    vector_error: str | None  # why the profile vector is missing although a profile exists
    summaries: list[SessionSummary]
    stated: list[StatedPreference]
    edits: list[ProfileEdit]

    @cached_property
    def history(self) -> History:
        """The history as events, each built when first read (its items at once)."""
        return history_from_rows(self.history_rows)


@dataclass
class ForgetReport:
    """How much of a user each store held when they were forgotten."""

    rows: dict[str, int]  # database table -> rows
    vectors: dict[str, int]  # Chroma collection -> records
    llm: dict[str, int]  # response cache rows, prompt-log records
    files: dict[str, int] = field(default_factory=dict)  # derived files holding their events -> files deleted

    @property
    def total(self) -> int:
        return sum(self.rows.values()) + sum(self.vectors.values()) + sum(self.llm.values())


class InvalidEdit(ValueError):
    """A profile edit names something the profile cannot hold; the message names the field."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


class Memory:
    def __init__(
        self,
        config: MemorySettings,
        db: Database,
        events: EventStore,
        profiles: ProfileStore,
        summaries: SummaryStore,
        catalog: Mapping[str, Item],
        llm: LLM | None,
        *,
        llm_files: tuple[Path | None, Path | None] = (None, None),
    ):
        """``llm_files``: the LLM's response cache and prompt log, forgotten with a user when no client runs."""
        self.statements = StatementStore(db)
        self.edits = EditStore(db)
        self.keys = KeyStore(db)
        self.conversations = ConversationStore(db)
        self.config = config
        self.llm_files = llm_files
        self.db = db
        self.events = events
        self.profiles = profiles
        self.summaries = summaries
        self.catalog = catalog
        self.titles = {i: item.title for i, item in catalog.items()}  # for summary documents
        self.llm = llm
        self.gap = timedelta(minutes=config.session_gap_minutes)
        self.policy = DriftPolicy(
            alpha=config.alpha,
            half_life=timedelta(days=config.half_life_days),
            min_weight=config.min_weight,
            max_interests=config.max_interests,
        )
        genres = sorted({g for item in catalog.values() for g in item.genres if g.lower() != "unknown"})
        self.vocabulary = genres if config.vocabulary == "genres" and genres else None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def open(cls, settings: Settings, catalog: Mapping[str, Item], llm: LLM | None) -> Memory:
        """Open (creating if needed) the store and the Chroma collections. Blocking: call in a thread."""
        db = open_database(settings)
        key = db.pseudonym_key()

        def tag(user: str) -> str:
            return pseudonym(user, key)

        client = chroma_client(settings.chroma)
        embedder = make_embedder(settings.embedding.backend, settings.embedding.model, settings.embedding.base_url)
        memory = cls(
            settings.memory,
            db,
            EventStore(db, cache_users=settings.memory.history_cache_users),
            ProfileStore(db, client, embedder, collection_name(settings.chroma, "profiles", embedder), tag),
            SummaryStore(db, client, embedder, collection_name(settings.chroma, "sessions", embedder), tag),
            catalog,
            llm,
            llm_files=(settings.llm.cache_path, settings.llm.log_path),
        )
        marker = f"chroma-v2:{settings.chroma.prefix}:{embedder.name}"  # per collection pair
        if not db.flag(marker):  # driftrec 0.1's Chroma records: re-keyed once
            memory.profiles.migrate_legacy_blocking()
            memory.summaries.migrate_legacy_blocking(memory.titles)
            db.set_flag(marker)
        return memory

    def tag(self, user: str) -> str:
        """The user's pseudonym: what Chroma, the prompt log, the response cache and log lines carry."""
        return self.profiles.tag(user)

    # -- events and sessions ----------------------------------------------------------------------

    async def observe(self, events: Iterable[Interaction], *, upkeep: bool = False) -> int:
        """Durably record validated events; returns how many were new (replays count zero).

        ``upkeep``: also schedule each user's profile upkeep for when their session will have closed."""
        events = list(events)
        written = await self.events.append(events)
        if upkeep and written:
            latest: dict[str, float] = {}
            for event in events:
                latest[event.user] = max(latest.get(event.user, 0.0), event.timestamp.timestamp())
            gap = self.gap.total_seconds()
            await asyncio.to_thread(self.schedule_blocking, {u: ts + gap for u, ts in latest.items()})
        return written

    async def sessions(self, user: str, now: datetime | None = None) -> list[Session]:
        return sessionize(await self.events.history(user), self.gap, now=now or datetime.now(UTC))

    async def short_term(self, user: str, now: datetime | None = None) -> Session | None:
        """The open session: what the user is doing right now."""
        return open_session(await self.events.history(user), self.gap, now or datetime.now(UTC))

    # -- profile ----------------------------------------------------------------------------------

    async def profile(self, user: str, *, vector: bool = True) -> tuple[InterestProfile, np.ndarray | None]:
        """The current long-term profile and its vector (u_l); an empty version 0 for a new user.
        ``vector=False`` reads the body alone (the database only, no Chroma)."""
        return await self.profiles.current(user, vector=vector)

    async def history(self, user: str) -> list[InterestProfile]:
        return await self.profiles.history(user)

    def ranking_inputs_blocking(self, user: str, now: datetime, state: tuple) -> RankingInputs:
        """Everything memory holds that one recommendation reads, in one worker-thread hop: the history, the
        profile and its vector (with Chroma down: the profile alone, and why), recent summaries, stated
        preferences still in force, standing edits. ``state``: the user's ``state_blocking`` row, just read by
        the caller (its events' part serves the history cache's check, and a store it counts empty for the
        user is not read: most users have no summaries, stated preferences or edits, and a new one
        no profile). A write after ``state`` was read may then be missed here: the answer is keyed to that
        state, so the next request computes again."""

        vector_error = None
        if not state[_PROFILE]:  # no profile head
            profile, vector = self.profiles.empty(user), None
        else:
            try:
                profile, vector = self.profiles.current_blocking(user)
            except VectorStoreUnavailable as exc:
                log.warning("profile vector not read: %s", exc)
                profile, vector = self.profiles.current_blocking(user, vector=False)
                vector_error = "profile vector: the vector store (Chroma) did not answer"
        return RankingInputs(
            history_rows=self.events.history_rows_blocking(user, state[_EVENTS : _EVENTS + 2]),
            profile=profile,
            vector=vector,
            vector_error=vector_error,
            summaries=self.summaries.recent_blocking(user, self.config.recent_summaries) if state[_SUMMARIES] else [],
            stated=self.statements.active_blocking(user, now, self.config.statement_hours) if state[_STATED] else [],
            edits=self.edits.latest_blocking(user) if state[_EDITS] else [],
        )

    def reads_locally(self, user: str, state: tuple) -> bool:
        """Whether ``ranking_inputs_blocking`` for this ``state`` waits on no network: the user has no profile
        (whose vector Chroma holds, perhaps over a network), and the store is SQLite (local files) or nothing
        else is to be read from it (no summaries, stated preferences or edits, and the history in this
        process's cache at the state's count and latest event) — fast enough for the event loop, where a
        worker thread's hop would cost more than the work."""
        if state[_PROFILE]:
            return False
        if self.db.local_reads:
            return True
        return _events_only(state) and self.events.is_cached(user, state[_EVENTS : _EVENTS + 2])

    async def read_ahead(self, user: str, state: tuple) -> None:
        """Where the store reads asynchronously: bring into this process's cache, on the event loop, the one
        thing ``ranking_inputs_blocking`` would read over the network for a user with nothing but events —
        their history, or its new rows — so that it then reads locally (``reads_locally``) and the request
        needs no worker thread at all. A user with a profile, summaries, stated preferences or edits is left
        to the worker thread's read."""
        if self.db.async_reads and _events_only(state):
            await self.events.cache(user, state[_EVENTS : _EVENTS + 2])

    async def state(self, user: str, now: datetime) -> tuple:
        """``state_blocking``'s row, read on the event loop (where the store reads asynchronously). When this
        process holds the user's history, the same statement brings their events written since, and the cache
        takes them in (``EventStore.take_tail``): a user who acts and looks again costs one round trip, not
        two, and each round trip costs a turn of a busy event loop (at 50 clients on PostgreSQL a computed
        answer after a click waited ~16 ms for each)."""
        parameters = self._state_parameters(user, now)
        top = self.events.cached_top(user)
        if top is None:
            row = await self.db.read_row(_STATE, parameters)
            assert row is not None  # aggregates: always one row
            return row
        rows = await self.db.read_rows(_STATE_WITH_TAIL, (*parameters, user, top))
        (state,) = (r[:_STATE_WIDTH] for r in rows if r[0] is not None)
        tail = sorted((r[_STATE_WIDTH:] for r in rows if r[0] is None), key=_TIME_ORDER)
        if tail:  # events past the cached ones
            self.events.take_tail(user, state[_EVENTS : _EVENTS + 2], tail)
        return state

    def state_blocking(self, user: str, now: datetime) -> tuple:
        """One statement that moves whenever anything ``ranking_inputs_blocking`` reads of ``user`` changes,
        through any process: their events (count, latest sequence number), profile head (version, when),
        session summaries (count, sum of end times), stated preferences in force at ``now`` (count, latest
        sequence number) and edits (count, latest sequence number). A repeat request checks this one row
        instead of reading the five (agent/answers.py). Rows are only added or deleted, but for the profile
        head (its version and time are read) and a summary written again for a session that gained events
        (the events' part moved with them); sequence numbers never come back, so a forgotten user who
        returns reads another state."""
        return tuple(self.db.connection().execute(_STATE, self._state_parameters(user, now)).fetchone())

    def _state_parameters(self, user: str, now: datetime) -> tuple:
        since = (now - timedelta(hours=self.config.statement_hours)).timestamp()  # stated preferences in force
        return (user, user, user, user, since, user)

    async def recent_summaries(self, user: str, n: int = 3) -> list[SessionSummary]:
        return await asyncio.to_thread(self.summaries.recent_blocking, user, n)

    async def edit_profile(self, user: str, edits: list[ProfileEdit], now: datetime | None = None) -> InterestProfile:
        """Apply the user's own corrections as a new profile version, and keep them standing (edits.py).

        Names are the catalog's genres (matched case-insensitively) when the vocabulary is genres."""
        now = now or datetime.now(UTC)
        canonical = {g.lower(): g for g in self.vocabulary or ()}
        fixed = []
        for index, edit in enumerate(edits):
            name = " ".join(edit.name.split())
            if canonical:
                if name.lower() not in canonical:
                    raise InvalidEdit(
                        f"edits[{index}].name: {edit.name!r} is not a genre of this catalog "
                        f"(one of: {', '.join(sorted(canonical.values()))})",
                        index,
                    )
                name = canonical[name.lower()]
            fixed.append(edit.model_copy(update={"name": name, "created_at": now}))  # the server's clock
        async with self._lock(user):
            await self.edits.add(user, fixed)
            current, _ = await self.profile(user)
            standing = await self.edits.latest(user)
            events = await self.events.history(user)
            nxt = current.model_copy(update={"version": current.version + 1, "updated_at": now, "rejected": []})
            new = uphold(nxt, standing, events, self.catalog, now)
            return await self.profiles.commit(new, current.version if current.version else None)

    def _lock(self, user: str) -> asyncio.Lock:
        return self._locks.setdefault(user, asyncio.Lock())

    async def summarize_closed(
        self,
        user: str,
        now: datetime | None = None,
        profile: InterestProfile | None = None,
        *,
        max_sessions: int | None = None,
    ) -> tuple[int, int, int]:
        """Summarize closed sessions not yet summarized, oldest first: (done, failed, left for later).

        ``profile`` is the current profile when the caller already holds it (saves a read)."""
        if self.llm is None:
            return 0, 0, 0
        done = await asyncio.to_thread(self.summaries.summarized_blocking, user)
        todo = [s for s in await self.sessions(user, now) if s.closed and s.session_id not in done]
        later = todo[max_sessions:] if max_sessions is not None else []
        todo = todo[:max_sessions] if max_sessions is not None else todo
        if not todo:
            return 0, 0, len(later)
        if profile is None:
            profile, _ = await self.profile(user)
        llm = self.llm

        async def one(session: Session) -> bool:
            try:
                summary, _ = await summarize_session(
                    llm,
                    session,
                    self.catalog,
                    profile,  # type: ignore[arg-type]
                    vocabulary=self.vocabulary,
                    max_items=self.config.max_session_items,
                )
            except LLMError as exc:
                log.warning("a session summary of user %s failed, will retry: %s", self.tag(user), exc)
                return False
            await asyncio.to_thread(self.summaries.save_blocking, summary, session.ended_at, self.titles)
            return True

        with acting_for(self.tag(user)):
            results = await asyncio.gather(*(one(s) for s in todo))
        return sum(results), len(results) - sum(results), len(later)

    async def refresh_profile(
        self, user: str, now: datetime | None = None, *, max_sessions: int | None = None
    ) -> RefreshResult:
        """Summarize closed sessions (at most ``max_sessions`` now) and fold them into a new profile version."""
        now = now or datetime.now(UTC)
        async with self._lock(user):
            current, _ = await self.profile(user)
            summarized, failed, remaining = await self.summarize_closed(user, now, current, max_sessions=max_sessions)
            result = RefreshResult(current, False, summarized, failed=failed, remaining=remaining)
            if failed:
                result.error, result.error_type = (
                    f"{failed} of {summarized + failed} session summaries failed",
                    "LLMError",
                )
            pending: list[SessionSummary] = await asyncio.to_thread(self.summaries.pending_blocking, user)
            if not pending or self.llm is None:
                return result
            try:
                with acting_for(self.tag(user)):
                    new, folded, claims, rejected, prompts = await self._fold(user, current, pending, now)
            except (LLMError, PromptTooLong) as exc:
                log.warning("profile update of user %s failed, old profile stays: %s", self.tag(user), exc)
                result.error, result.error_type = f"{type(exc).__name__}: {exc}", type(exc).__name__
                return result
            try:
                # the folded summaries are marked applied as the head moves (one transaction)
                await self.profiles.commit(
                    new, current.version if current.version else None, [s.session_id for s in folded]
                )
            except StaleProfileError as exc:  # another process won; its version stands
                result.profile = (await self.profile(user))[0]
                result.error, result.error_type = str(exc), "StaleProfileError"
                return result
            result.profile, result.updated, result.folded = new, True, len(folded)
            result.claims, result.rejected, result.prompts = claims, rejected, tuple(prompts)
            return result

    async def _fold(
        self, user: str, current: InterestProfile, pending: list[SessionSummary], now: datetime
    ) -> tuple[InterestProfile, list[SessionSummary], int, list[Rejection], list[str]]:
        """Fold pending summaries into the next version, in batches that fit the context window.

        Each batch's proposal is grounded in the events of exactly those sessions (and what the user
        stated meanwhile), then blended in; the batches chain, so hundreds of sessions fold without ever
        exceeding the window. Returns the new version, the summaries folded, the number of claims the LLM
        made, the rejected ones and the prompt ids."""
        assert self.llm is not None
        sessions = {s.session_id: s for s in await self.sessions(user, now)}
        stated = await self.statements.between(user, current.updated_at, now)
        running, claims, rejected, prompts = current, 0, [], []
        batch = max(1, self.config.fold_batch)
        start = 0
        while start < len(pending):
            chunk = pending[start : start + batch]
            window = [e for s in chunk if s.session_id in sessions for e in sessions[s.session_id].interactions]
            said = stated if start == 0 else []
            evidence = gather(window, self.catalog, said)
            # with the genres as vocabulary, the LLM may name only genres these events back (interests apart
            # from dislikes): a small model cannot spend the reply on claims grounding would refuse
            liked, disliked = claimable(evidence, self.vocabulary) if self.vocabulary else (None, None)
            try:
                proposal, prompt_id = await propose_update(
                    self.llm,
                    running,
                    chunk,
                    self.titles,
                    vocabulary=liked,
                    dislike_vocabulary=disliked,
                    stated=[_stated_line(s) for s in said],
                )
            except PromptTooLong:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)  # fewer summaries per prompt, same order
                continue
            grounded, refused = ground(proposal, evidence)
            claims += len(proposal.interests) + len(proposal.dislikes)
            rejected += refused
            prompts.append(prompt_id)
            stamp = max((s.created_at for s in chunk), default=now) if start + len(chunk) < len(pending) else now
            running = apply_proposal(running, grounded, stamp, self.policy)
            running = running.model_copy(update={"version": current.version + 1})
            start += len(chunk)
        refused = [f"{r.kind} {r.name}: {r.reason}" for r in rejected][:50]
        standing = await self.edits.latest(user)
        if standing:  # the user's own corrections hold until their events after them say otherwise
            running = uphold(running, standing, await self.events.history(user), self.catalog, now)
        return running.model_copy(update={"updated_at": now, "rejected": refused}), pending, claims, rejected, prompts

    # -- upkeep: profiles refresh by themselves when sessions close --------------------------------

    def schedule_blocking(self, due: Mapping[str, float]) -> None:
        """Mark users whose profile needs upkeep at the given times (durable: survives a restart)."""
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO upkeep (user, due_at, attempts) VALUES (?, ?, 0) "
                "ON CONFLICT(user) DO UPDATE SET attempts = 0, error = NULL, due_at = CASE "
                "WHEN excluded.due_at > upkeep.due_at THEN excluded.due_at ELSE upkeep.due_at END",
                list(due.items()),
            )

    def due_blocking(self, now: float, limit: int) -> list[str]:
        rows = (
            self.db.connection()
            .execute("SELECT user FROM upkeep WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit))
            .fetchall()
        )
        return [r[0] for r in rows]

    def upkeep_done_blocking(self, user: str, due_before: float) -> None:
        """Drop the user's upkeep row unless new events pushed it past ``due_before``."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM upkeep WHERE user = ? AND due_at <= ?", (user, due_before))

    def upkeep_reschedule_blocking(self, user: str, due_at: float, error: str | None = None) -> int:
        """Move the user's upkeep to ``due_at``; with ``error``, count a failed attempt. Returns attempts."""
        with self.db.transaction() as conn:
            if error is None:
                conn.execute("UPDATE upkeep SET due_at = ? WHERE user = ?", (due_at, user))
            else:
                conn.execute(
                    "UPDATE upkeep SET due_at = ?, attempts = attempts + 1, error = ? WHERE user = ?",
                    (due_at, error[:500], user),
                )
            row = conn.execute("SELECT attempts FROM upkeep WHERE user = ?", (user,)).fetchone()
        return int(row[0]) if row else 0

    def upkeep_attempts_blocking(self, user: str) -> int:
        row = self.db.connection().execute("SELECT attempts FROM upkeep WHERE user = ?", (user,)).fetchone()
        return int(row[0]) if row else 0

    def upkeep_users_blocking(self) -> list[str]:
        """Every user with events: what a batch refresh of all profiles walks through."""
        return [r[0] for r in self.db.connection().execute("SELECT DISTINCT user FROM events ORDER BY user")]

    # -- privacy ----------------------------------------------------------------------------------

    async def forget_user(self, user: str) -> ForgetReport:
        """Delete everything of the user from every store memory writes, and say how much each held.

        SQLite rows go in one transaction (zeroed on disk, the WAL truncated after); Chroma records are
        found by the user's pseudonym; the LLM client drops the user's cached responses and prompt log.
        """
        tag = self.tag(user)
        async with self._lock(user):
            vectors = {
                "profiles": await asyncio.to_thread(self.profiles.delete_vectors_blocking, user),
                "sessions": await asyncio.to_thread(self.summaries.delete_vectors_blocking, user),
            }
            rows = await asyncio.to_thread(self.db.delete_user_blocking, user)
            self.events.forget_cached(user)
            await asyncio.to_thread(self.db.checkpoint)
            llm = await self._forget_llm(tag)
        self._locks.pop(user, None)
        return ForgetReport(rows=rows, vectors=vectors, llm=llm)

    async def _forget_llm(self, tag: str) -> dict[str, int]:
        """The user's LLM response cache rows and prompt-log records: through the live client, else the
        configured files (forgetting works with no LLM running)."""
        if self.llm is not None:
            return await self.llm.client.forget(tag)
        cache, log_path = self.llm_files
        return {
            "cache": await ResponseCache(cache).forget(tag) if cache is not None and cache.exists() else 0,
            "log": await JsonlLog(log_path).forget(tag) if log_path is not None else 0,
        }


def _stated_line(statement: StatedPreference) -> str:
    verb = "wants more" if statement.polarity == "like" else "does not want"
    return f"{verb} {statement.name}" + (f' ("{statement.text[:200]}")' if statement.text else "")
