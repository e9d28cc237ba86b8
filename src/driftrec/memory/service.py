"""Memory as one object: events in, sessions and summaries out, a profile that drifts.

``observe`` records events durably. ``refresh_profile`` summarizes every closed session not yet
summarized (concurrently: vLLM batches them), then folds the pending summaries into a new profile
version (serialized per user in this process, and guarded by the optimistic head check across
processes). Any LLM failure leaves the current profile as it was; the summaries stay pending and the
next refresh retries them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from driftrec.config import Settings
from driftrec.llm import LLM, LLMError
from driftrec.memory.conversation import ConversationStore, StatementStore
from driftrec.memory.db import Database
from driftrec.memory.drift import DriftPolicy, apply_proposal
from driftrec.memory.events import EventStore
from driftrec.memory.llm_steps import propose_update, summarize_session
from driftrec.memory.profiles import ProfileStore, StaleProfileError, SummaryStore
from driftrec.memory.sessions import open_session, sessionize
from driftrec.models import Interaction, InterestProfile, Item, Session, SessionSummary
from driftrec.retrieval import chroma_client, make_embedder
from driftrec.retrieval.store import collection_name

log = logging.getLogger(__name__)


@dataclass
class RefreshResult:
    profile: InterestProfile
    updated: bool
    summarized: int
    error: str | None = None
    prompts: tuple[str, ...] = ()


class Memory:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        events: EventStore,
        profiles: ProfileStore,
        summaries: SummaryStore,
        catalog: Mapping[str, Item],
        llm: LLM | None,
    ):
        self.statements = StatementStore(db)
        self.conversations = ConversationStore(db)
        self.settings = settings
        self.db = db
        self.events = events
        self.profiles = profiles
        self.summaries = summaries
        self.catalog = catalog
        self.titles = {i: item.title for i, item in catalog.items()}  # for summary documents
        self.llm = llm
        self.gap = timedelta(minutes=settings.memory_session_gap_minutes)
        self.policy = DriftPolicy(
            alpha=settings.memory_alpha,
            half_life=timedelta(days=settings.memory_half_life_days),
            min_weight=settings.memory_min_weight,
            max_interests=settings.memory_max_interests,
        )
        genres = sorted({g for item in catalog.values() for g in item.genres if g.lower() != "unknown"})
        self.vocabulary = genres if settings.memory_vocabulary == "genres" and genres else None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def open(cls, settings: Settings, catalog: Mapping[str, Item], llm: LLM | None) -> Memory:
        """Open (creating if needed) the SQLite file and the Chroma collections. Blocking: call in a thread."""
        db = Database(settings.data_dir / "memory.db")
        client = chroma_client(settings)
        embedder = make_embedder(settings.embedding_backend, settings.embedding_model, settings.embedding_base_url)
        return cls(
            settings,
            db,
            EventStore(db),
            ProfileStore(db, client, embedder, collection_name(settings, "profiles", embedder)),
            SummaryStore(db, client, embedder, collection_name(settings, "sessions", embedder)),
            catalog,
            llm,
        )

    # -- events and sessions ----------------------------------------------------------------------

    async def observe(self, events: Iterable[Interaction]) -> int:
        """Durably record validated events; returns how many were new (replays count zero)."""
        return await self.events.append(events)

    async def sessions(self, user: str, now: datetime | None = None) -> list[Session]:
        return sessionize(await self.events.history(user), self.gap, now=now or datetime.now(UTC))

    async def short_term(self, user: str, now: datetime | None = None) -> Session | None:
        """The open session: what the user is doing right now."""
        return open_session(await self.events.history(user), self.gap, now or datetime.now(UTC))

    # -- profile ----------------------------------------------------------------------------------

    async def profile(self, user: str) -> tuple[InterestProfile, np.ndarray | None]:
        """The current long-term profile and its vector (u_l); an empty version 0 for a new user."""
        return await self.profiles.current(user)

    async def history(self, user: str) -> list[InterestProfile]:
        return await self.profiles.history(user)

    async def recent_summaries(self, user: str, n: int = 3) -> list[SessionSummary]:
        return await asyncio.to_thread(self.summaries.recent_blocking, user, n)

    def _lock(self, user: str) -> asyncio.Lock:
        return self._locks.setdefault(user, asyncio.Lock())

    async def summarize_closed(
        self, user: str, now: datetime | None = None, profile: InterestProfile | None = None
    ) -> int:
        """Summarize every closed, not yet summarized session; returns how many were.

        ``profile`` is the current profile when the caller already holds it (saves a Chroma read)."""
        if self.llm is None:
            return 0
        done = await asyncio.to_thread(self.summaries.summarized_blocking, user)
        todo = [s for s in await self.sessions(user, now) if s.closed and s.session_id not in done]
        if not todo:
            return 0
        if profile is None:
            profile, _ = await self.profile(user)

        async def one(session: Session) -> bool:
            try:
                summary, _ = await summarize_session(
                    self.llm,
                    session,
                    self.catalog,
                    profile,  # type: ignore[arg-type]
                    vocabulary=self.vocabulary,
                    max_items=self.settings.memory_max_session_items,
                )
            except LLMError as exc:
                log.warning("summary of %s failed, will retry: %s", session.session_id, exc)
                return False
            await asyncio.to_thread(self.summaries.save_blocking, summary, session.ended_at, self.titles)
            return True

        return sum(await asyncio.gather(*(one(s) for s in todo)))

    async def refresh_profile(self, user: str, now: datetime | None = None) -> RefreshResult:
        """Summarize closed sessions and fold them into a new profile version (or keep the old one)."""
        now = now or datetime.now(UTC)
        async with self._lock(user):
            current, _ = await self.profile(user)
            summarized = await self.summarize_closed(user, now, current)
            pending: list[SessionSummary] = await asyncio.to_thread(self.summaries.pending_blocking, user)
            if not pending or self.llm is None:
                return RefreshResult(current, False, summarized)
            try:
                proposal, prompt_id = await propose_update(
                    self.llm, current, pending, self.catalog, vocabulary=self.vocabulary
                )
            except LLMError as exc:
                log.warning("profile update for %s failed, old profile stays: %s", user, exc)
                return RefreshResult(current, False, summarized, error=f"{type(exc).__name__}: {exc}")
            new = apply_proposal(current, proposal, now, self.policy)
            try:
                await self.profiles.commit(new, current.version if current.version else None)
            except StaleProfileError as exc:  # another process won; its version stands
                return RefreshResult((await self.profile(user))[0], False, summarized, error=str(exc))
            await asyncio.to_thread(self.summaries.mark_applied_blocking, [s.session_id for s in pending])
            return RefreshResult(new, True, summarized, prompts=(prompt_id,))

    # -- privacy ----------------------------------------------------------------------------------

    async def forget_user(self, user: str) -> None:
        """Delete the user's events, sessions, summaries, statements, chats and every profile version."""
        async with self._lock(user):
            await self.events.delete_user(user)
            await asyncio.to_thread(self.summaries.delete_user_blocking, user)
            await asyncio.to_thread(self.profiles.delete_user_blocking, user)
            await asyncio.to_thread(self.statements.delete_user_blocking, user)
            await asyncio.to_thread(self.conversations.delete_user_blocking, user)
        self._locks.pop(user, None)
