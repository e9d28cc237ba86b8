"""The Recommender: driftrec's async Python API, and what the chat agent, CLI and HTTP service call.

One ``recommend()`` call: memory gives the open session, recent summaries, stated preferences and the
current profile (u_l) -> retrieval fuses vector, co-occurrence and popularity candidates (seen items
and stated dislikes excluded) -> the re-ranker asks the LLM and fuses its order with retrieval's ->
``RecommendationList``. The LLM failing never fails the call: the answer is then retrieval's, flagged
``degraded``.

Everything it starts (the embedded vLLM, background refits) it stops in ``aclose()``; use it as
``async with Recommender.from_settings() as rec: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from driftrec.agent.answers import RecentAnswers, answer_json
from driftrec.agent.chat import ChatAgent, ChatOptions, TurnInfo
from driftrec.agent.refresh import AnswerRefresher
from driftrec.agent.requests import Constraints, parse_request
from driftrec.agent.tools import RecommenderTools
from driftrec.agent.upkeep import Upkeep
from driftrec.config import Settings, load_settings
from driftrec.data import load_catalog, load_grouplens_100k, load_movielens_100k
from driftrec.llm import LLM, open_llm
from driftrec.llm.registry import embedded_model
from driftrec.memory.edits import standing
from driftrec.memory.keys import KeyStore
from driftrec.memory.profiles import profile_document, summary_document
from driftrec.memory.service import ForgetReport, InvalidEdit, Memory, RankingInputs, RefreshResult
from driftrec.memory.sessions import open_session
from driftrec.models import (
    Action,
    Candidate,
    Filters,
    Interaction,
    InterestProfile,
    Item,
    ProfileEdit,
    RecommendationList,
    StatedPreference,
)
from driftrec.privacy import acting_for
from driftrec.ranking import Reranker, build_context
from driftrec.ranking.features import FeatureBuilder
from driftrec.ranking.learned import LearnedRanker, RankerFileError, catalog_fingerprint
from driftrec.ranking.second_phase import SecondPhase, ranker_identity, train_second_phase
from driftrec.ranking.training import candidate_pool, train_ranker
from driftrec.retrieval import CandidateGenerator, ItemIndex, RetrievalRequest
from driftrec.retrieval.candidates import empty_indexes
from driftrec.retrieval.log import UserCodes
from driftrec.retrieval.snapshot import Snapshot, SnapshotDir, catalog_key, store_key
from driftrec.retrieval.sources import Scored
from driftrec.retrieval.store import ensure_items, open_item_index

log = logging.getLogger(__name__)
T = TypeVar("T")

Signal = Literal["like", "dislike", "click", "view", "skip", "purchase"]


class RecommenderError(RuntimeError):
    """Base class of the facade's own errors."""


class UnknownItem(RecommenderError, KeyError):
    """An item id that is not in the catalog."""

    def __init__(self, item: str):
        super().__init__(item)
        self.item = item

    def __str__(self) -> str:
        return f"unknown item {self.item!r}: not in the catalog"


class InvalidEvent(RecommenderError, ValueError):
    """An event the log must not take (a timestamp outside the accepted window); ``loc`` names it."""

    def __init__(self, message: str, loc: list[str | int]):
        super().__init__(message)
        self.loc = loc


class NotStarted(RecommenderError):
    """The Recommender was used outside ``async with`` (or after ``aclose()``)."""


def catalog_path(settings: Settings) -> Path:
    return settings.data_dir / "catalog.jsonl"


def save_catalog(settings: Settings, items: Iterable[Item]) -> Path:
    """Make ``items`` the served catalog (what ``driftrec ingest`` does); atomic. Blocking."""
    path = catalog_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(item.model_dump_json() + "\n" for item in items), encoding="utf-8")
    tmp.replace(path)
    return path


def load_items(settings: Settings) -> dict[str, Item]:
    """The served catalog: the one last ingested (``<data_dir>/catalog.jsonl``), else ``settings.catalog``.
    Blocking: call in a thread."""
    saved = catalog_path(settings)
    if saved.exists():
        items = [Item.model_validate_json(line) for line in saved.read_text(encoding="utf-8").splitlines() if line]
        return {item.id: item for item in items}
    source = settings.catalog
    if source == "movielens-100k":
        return load_movielens_100k(settings.cache_dir).items
    path = Path(source).expanduser()
    if path.is_dir():
        return load_grouplens_100k(path).items
    items, _ = load_catalog(path)
    return {item.id: item for item in items}


class Recommender:
    """Async facade over memory, retrieval and ranking. Safe to share between many concurrent tasks."""

    def __init__(self, settings: Settings, *, llm: LLM | Literal["auto"] | None = "auto"):
        self.settings = settings
        self._llm_option = llm
        self.llm: LLM | None = None
        self.catalog: dict[str, Item] = {}
        self.memory: Memory | None = None
        self.index: ItemIndex | None = None
        self.generator: CandidateGenerator | None = None
        self.reranker: Reranker | None = None
        self._owns_llm = False
        self._users = UserCodes()  # dense user codes of the candidate indexes
        self._positions: dict[str, int] = {}  # catalog item -> its column in the candidate indexes
        self._fitted_position = 0  # the event log position the candidate indexes have taken in
        self._generation = 0  # the store's generation they were built at (it moves when users are forgotten)
        self._saved_position = 0  # the position of the last snapshot this process saved or loaded
        self.snapshots = SnapshotDir(settings.index.dir or settings.data_dir / "indexes")
        self.index_origin = ""  # "snapshot" (loaded, then caught up) or "fit" (from the whole log)
        self._features_position = 0  # ... and the learned ranker's features
        self._polled_at = 0.0  # when the log position was last looked at (time.monotonic)
        self._refit: asyncio.Task[None] | None = None
        self.catch_ups = 0  # incremental updates of the candidate indexes made (for logs and tests)
        self._index_lock = asyncio.Lock()  # one fit or update of the candidate indexes at a time
        self._tasks: set[asyncio.Task[Any]] = set()
        self.answers = RecentAnswers(settings.ranking.answer_cache_s, settings.ranking.answer_cache_users)
        self._title_keys: dict[str, str] = {}
        self._title_members: dict[str, tuple[str, ...]] = {}
        self._started = False
        self._agent: ChatAgent | None = None
        self.upkeep: Upkeep | None = None
        # answers computed after a user's events when each costs an LLM call (a served second phase)
        self.refresher = AnswerRefresher(self._refresh, settings.ranking.refresh_queue)
        self.latest_year: int | None = None  # the catalog's newest release year
        self.learned: LearnedRanker | None = None  # the learned ranking stage, when a usable one is saved
        self.learned_error: str | None = None  # why a saved ranker could not be used
        self.second_phase: SecondPhase | None = None  # the LLM's judgement of the learned top window, weighed
        self.features: FeatureBuilder | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, llm: LLM | Literal["auto"] | None = "auto", **overrides: Any
    ) -> Recommender:
        """A Recommender for ``settings`` (or the environment and driftrec.toml, plus ``overrides``).

        ``llm="auto"`` connects to the configured endpoint or starts the embedded vLLM; pass an ``LLM``
        to share one, or ``None`` to run with no LLM at all (retrieval and stored profiles only).
        """
        settings = settings.model_copy(update=overrides) if settings else load_settings(**overrides)
        return cls(settings, llm=llm)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> Recommender:
        if self._started:
            return self
        try:
            self.catalog = await asyncio.to_thread(load_items, self.settings)
            self._title_keys = title_keys(self.catalog)
            self._title_members = title_members(self._title_keys)
            years = [item.year for item in self.catalog.values() if item.year]
            self.latest_year = max(years) if years else None  # what "recent" means, found once
            self.index = await open_item_index(self.settings)
            if self._llm_option == "auto" and not self.settings.llm.enabled:
                self.llm = None  # configured off: retrieval and stored profiles only
            elif self._llm_option == "auto":
                self.llm = await open_llm(self.settings)
                self._owns_llm = True
            else:
                self.llm = self._llm_option
            self.memory = await asyncio.to_thread(Memory.open, self.settings, self.catalog, self.llm)
            await ensure_items(self.index, self.catalog, Counter())
            self._load_ranker()
            await self._fit()
            self.reranker = Reranker(self.llm, self.settings.ranking)
            if self.llm is not None and self.settings.memory.upkeep:
                self.upkeep = Upkeep(
                    self.memory,
                    interval_s=self.settings.memory.upkeep_interval_s,
                    retries=self.settings.memory.upkeep_retries,
                    max_sessions=self.settings.memory.refresh_max_sessions,
                )
                self.upkeep.start()
            self._started = True
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Stop background work and everything this Recommender started (the embedded vLLM included)."""
        checks = self.answers.hits + self.answers.misses
        if self._started and checks:
            log.info("answers reused: %d of %d repeat checks", self.answers.hits, checks)
        self._started = False
        if self.upkeep is not None:
            await self.upkeep.stop()
            self.upkeep = None
        await self.refresher.stop()
        tasks = [t for t in [self._refit, *self._tasks] if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.llm is not None and self._owns_llm:
            await self.llm.aclose()
        self.llm = None
        if self.memory is not None:
            await self.memory.db.aclose()  # this loop's asynchronous read connections (PostgreSQL)

    async def __aenter__(self) -> Recommender:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def started(self) -> bool:
        return self._started

    def _require(self) -> Memory:
        if not self._started or self.memory is None:
            raise NotStarted("use `async with Recommender.from_settings(...) as rec:` (or await rec.start())")
        return self.memory

    # -- candidate indexes ------------------------------------------------------------------------

    async def _fit(self) -> None:
        """Load the newest saved snapshot of the candidate indexes that fits this catalog, settings and store
        generation and take in the events after it; else fit co-occurrence, transitions and popularity on the
        whole log, read as columns, and save a snapshot for the processes that start after. In threads."""
        memory = self.memory
        assert memory is not None and self.index is not None
        async with self._index_lock:
            started = time.perf_counter()
            positions = {item: i for i, item in enumerate(self.catalog)}
            position, generation = await asyncio.to_thread(memory.events.state_blocking)  # before any read
            params = empty_indexes(self.settings.retrieval).params()
            snapshot = None
            if self.settings.index.snapshot_events:
                store = await asyncio.to_thread(memory.db.pseudonym_key)
                snapshot = await asyncio.to_thread(
                    self.snapshots.load,
                    store_key(store),
                    generation,
                    list(self.catalog),
                    params,
                )
            if snapshot is not None and snapshot.position <= position:
                users = snapshot.users
                generator = CandidateGenerator.from_indexes(
                    self.settings.retrieval, self.index, self.catalog, snapshot.indexes
                )
                new = await asyncio.to_thread(memory.events.columns_blocking, positions, users, after=snapshot.position)
                if len(new):
                    await asyncio.to_thread(generator.update, new, len(users))
                fitted, origin = max(snapshot.position, new.last_seq), "snapshot"
                self._saved_position = snapshot.position
            else:
                users = UserCodes()
                columns = await asyncio.to_thread(memory.events.columns_blocking, positions, users)
                generator = await asyncio.to_thread(
                    CandidateGenerator.build_from_columns,
                    self.settings.retrieval,
                    self.index,
                    self.catalog,
                    columns,
                    len(users),
                )
                fitted, origin = columns.last_seq, "fit"
            if self.learned is not None:
                events = await asyncio.to_thread(memory.events.all_blocking)
                self.features = await asyncio.to_thread(FeatureBuilder().fit, events, self.catalog)
                self._features_position = fitted
            self.generator, self._users, self._positions = generator, users, positions
            self._fitted_position, self._generation, self.index_origin = fitted, generation, origin
            self._polled_at = time.monotonic()
            log.info(
                "candidate indexes %s in %.1f s (log position %d, generation %d, %d users)",
                "loaded from a snapshot and caught up" if origin == "snapshot" else "fitted on the whole log",
                time.perf_counter() - started,
                fitted,
                generation,
                len(users),
            )
            if origin == "fit":
                await self._save_snapshot()

    async def _save_snapshot(self) -> None:
        """Save the candidate indexes (under the index lock). A save that raced a forget is deleted again:
        either this check sees the new generation, or the forgetting process's prune sees this file."""
        memory = self.memory
        assert memory is not None and self.generator is not None
        if not self.settings.index.snapshot_events:
            return
        snapshot = Snapshot(
            store=store_key(await asyncio.to_thread(memory.db.pseudonym_key)),
            generation=self._generation,
            position=self._fitted_position,
            catalog=catalog_key(list(self.catalog)),
            params=self.generator.indexes.params(),
            indexes=self.generator.indexes,
            users=self._users,
        )
        started = time.perf_counter()
        try:
            path = await asyncio.to_thread(self.snapshots.save, snapshot)
            _, generation = await asyncio.to_thread(memory.events.state_blocking)
        except OSError as exc:  # a full or read-only volume costs the next process a fit, nothing more
            log.warning("the candidate indexes were not saved to %s: %s", self.snapshots.path, exc)
            return
        if generation != self._generation:
            path.unlink(missing_ok=True)
        else:
            self._saved_position = self._fitted_position
            log.info("candidate indexes saved to %s in %.1f s", path, time.perf_counter() - started)

    async def _catch_up(self, after_s: float = 0.0) -> None:
        """Take events written since the last fit or update into the candidate indexes (incrementally: the
        cost follows the new events, not the log), saving a snapshot every ``index_snapshot_events``; refit
        the learned ranker's features every ``refit_every_events``. ``after_s``: wait that long first, so
        the writes that come meanwhile are taken in by this update too."""
        memory = self._require()
        if after_s > 0:
            await asyncio.sleep(after_s)
        self.catch_ups += 1
        async with self._index_lock:  # two updates reading the same new events would count them twice
            assert self.generator is not None
            new = await asyncio.to_thread(
                memory.events.columns_blocking, self._positions, self._users, after=self._fitted_position
            )
            if len(new):
                await asyncio.to_thread(self.generator.update, new, len(self._users))
                self._fitted_position = new.last_seq
                every = self.settings.index.snapshot_events
                if every and self._fitted_position - self._saved_position >= every:
                    await self._save_snapshot()
            if (
                self.learned is not None
                and self._fitted_position - self._features_position >= self.settings.refit_every_events
            ):
                events = await asyncio.to_thread(memory.events.all_blocking)
                self.features = await asyncio.to_thread(FeatureBuilder().fit, events, self.catalog)
                self._features_position = self._fitted_position

    def ranker_dir(self) -> Path:
        return self.settings.data_dir / "ranker"

    def _load_ranker(self) -> None:
        """The saved learned ranker, checked against this catalog and these features; a file that does not
        fit is reported (every answer says why it fell back to fusion), never used misaligned."""
        self.learned, self.learned_error, self.second_phase = None, None, None
        if not self.settings.ranking.learned or not self.ranker_dir().exists():
            return
        try:
            self.learned = LearnedRanker.load(self.ranker_dir(), catalog_fingerprint(self.catalog))
        except RankerFileError as exc:
            self.learned_error = f"RankerFileError: {exc}"
            log.warning("the learned ranker is not used: %s", exc)
            return
        # A saved second phase needs the LLM it was trained on; with no LLM configured it is simply not asked.
        if self.settings.ranking.second_phase and self.llm is not None and SecondPhase.saved(self.ranker_dir()):
            try:
                self.second_phase = SecondPhase.load(
                    self.ranker_dir(), ranker=ranker_identity(self.learned.card), model=self.llm.client.model
                )
            except RankerFileError as exc:
                self.learned_error = f"RankerFileError: {exc}"
                log.warning("the second phase is not used: %s", exc)

    async def train_ranker(
        self,
        *,
        stages: int = 5,
        pool: int = 100,
        second_phase_users: int = 0,
        window: int = 20,
        progress: Callable[[str], None] | None = None,
    ) -> LearnedRanker:
        """Train the learned ranker on every event recorded so far (each user's last ``stages`` events as
        targets, nothing after a target known), save it in ``ranker_dir()`` and use it from now on.

        ``second_phase_users``: also train the second phase on that many users' last events, each user's
        learned top ``window`` judged by the served LLM (one call per user); the learned ranker then trains
        without those last events, so the phase learns how far its scores can be trusted on unseen targets."""
        memory = self._require()
        assert self.index is not None
        if second_phase_users and self.llm is None:
            raise ValueError("a second phase needs a served LLM: this Recommender runs without one")
        sequences: dict[str, list[Interaction]] = {}
        for event in sorted(await asyncio.to_thread(memory.events.all_blocking), key=lambda e: e.timestamp):
            sequences.setdefault(event.user, []).append(event)
        learn_from = {u: s[:-1] for u, s in sequences.items()} if second_phase_users else sequences
        model = await train_ranker(
            self.settings.retrieval, self.index, self.catalog, learn_from, stages=stages, pool=pool, progress=progress
        )
        phase = None
        if second_phase_users:
            assert self.llm is not None
            phase = await train_second_phase(
                self.llm,
                model,
                self.settings.retrieval,
                self.index,
                self.catalog,
                sequences,
                users=second_phase_users,
                window=window,
                pool=pool,
                progress=progress,
            )
        await asyncio.to_thread(model.save, self.ranker_dir())
        if phase is not None:
            await asyncio.to_thread(phase.save, self.ranker_dir())
        else:  # a phase weighs one ranker's scores: the previous ranker's goes with it
            await asyncio.to_thread(SecondPhase.remove, self.ranker_dir())
        self._load_ranker()
        await self._fit()
        return model

    async def _candidates(
        self,
        request: RetrievalRequest,
        n: int,
        in_memory: tuple[CandidateGenerator, dict[str, Scored]] | None = None,
        *,
        keep: int | None = None,
    ) -> tuple[list[Candidate], str]:
        """The candidates in the order the LLM stage starts from: the learned ranker's over its pool when
        there is one, else fusion's top ``n``; and which of the two it was. ``in_memory``: the generator's
        in-memory lists for fusion's top ``n``, already asked (used while that generator is still the one).
        ``keep``: fusion builds only its first ``keep`` (``CandidateGenerator.generate``)."""
        assert self.generator is not None
        if self.learned is None or self.features is None:
            given = in_memory[1] if in_memory is not None and in_memory[0] is self.generator else None
            return await self.generator.generate(request, n, in_memory=given, keep=keep), "fusion"
        features, learned = self.features, self.learned
        pool = await candidate_pool(self.generator, request, learned.card.pool, features)

        def scored() -> np.ndarray:  # the features and the model in one worker-thread hop
            return learned.scores(features.features(list(request.history), request.now.timestamp(), pool))

        scores = await asyncio.to_thread(scored)
        order = np.argsort(-scores, kind="stable")
        return [pool[i].model_copy(update={"score": float(scores[i])}) for i in order], "learned"

    async def refit(self) -> None:
        """Bring the candidate indexes up to date with every event recorded so far (after a bulk load,
        before ranking): wait for an update already under way, then take in what is left."""
        self._require()
        if self._refit is not None and not self._refit.done():
            await self._refit  # never two updates at once
        self._polled_at = time.monotonic()
        await self._catch_up()

    async def _maybe_refit(self, *, wrote: bool = False) -> None:
        """Start a background catch-up when this process wrote events, or, at most every ``index_poll_s``,
        when the log moved (other processes' events); a whole refit when the store's generation moved (a
        user was forgotten through another process). No query at all on most requests."""
        memory = self._require()
        if self._refit is not None and not self._refit.done():
            return
        if not wrote:
            if time.monotonic() - self._polled_at < self.settings.index.poll_s:
                return
            self._polled_at = time.monotonic()
            position, generation = await asyncio.to_thread(memory.events.state_blocking)
            if generation != self._generation:  # a user was forgotten through another process
                memory.events.forget_cached()
                self.answers.forget()
                self._refit_whole()
                return
            if position <= self._fitted_position:
                return
        # this process's own write: one update for the writes of the next ``index_catch_up_s`` (a tenth of
        # requests being clicks started ~100 updates a second per process, ~1.3 ms of CPU each at 100k events)
        self._refit = asyncio.create_task(self._catch_up(self.settings.index.catch_up_s if wrote else 0.0))

    def _refit_whole(self) -> None:
        """Fit from scratch in the background (after forgetting a user: their events leave the indexes)."""

        previous = self._refit

        async def whole() -> None:
            if previous is not None and not previous.done():
                await previous
            await self._fit()

        self._refit = asyncio.create_task(whole())

    # -- events -----------------------------------------------------------------------------------

    async def observe(self, events: Iterable[Interaction], *, upkeep: bool | None = None) -> int:
        """Record events durably (idempotent by event id); returns how many were new.

        ``upkeep`` (default: the ``memory_upkeep`` setting) schedules each user's profile refresh for
        when their session closes; a bulk import of history passes False and runs
        ``driftrec memory refresh --all`` instead. Live writes (not False) also have each user's next answer
        computed in the background when answers cost an LLM call (``refresher``). Raises UnknownItem if an
        event names an item outside the catalog (nothing is written then).
        """
        memory = self._require()
        events = list(events)
        latest = _now() + timedelta(seconds=self.settings.events_max_future_s)
        for n, event in enumerate(events):
            if event.item not in self.catalog:
                raise UnknownItem(event.item)
            if not EPOCH <= event.timestamp <= latest:  # a far-future event would stay "the open session" for ever
                raise InvalidEvent(
                    f"events[{n}].timestamp {event.timestamp.isoformat()} is outside the accepted window "
                    f"(1970 to now + {self.settings.events_max_future_s:g} s, DRIFTREC_EVENTS_MAX_FUTURE_S)",
                    ["body", "events", n, "timestamp"],
                )
        bulk = upkeep is False
        upkeep = self.settings.memory.upkeep if upkeep is None else upkeep
        written = await memory.observe(events, upkeep=upkeep and self.llm is not None)
        await self._maybe_refit(wrote=written > 0)
        if written and not bulk and self._refreshes():
            self.refresher.schedule(dict.fromkeys(e.user for e in events))
        return written

    def _refreshes(self) -> bool:
        """Whether a write schedules the user's next answer: only when an answer costs an LLM call (a served
        second phase) and the setting is on; a bulk import (``upkeep=False``) never does."""
        return self.settings.ranking.refresh_after_write and self.second_phase is not None and self._started

    async def _refresh(self, user: str) -> None:
        """The answer the API's default request (k=10) will want, computed and kept now (``refresher``), once
        the candidate indexes have taken in the write (else the next request's key, which names their
        position, would not match it)."""
        if self._refit is not None and not self._refit.done():
            await asyncio.wait({self._refit})
        await self.recommend(user, k=10)

    async def feedback(
        self, user: str, item: str, signal: Signal | float, *, text: str | None = None, at: datetime | None = None
    ) -> Interaction:
        """One explicit signal: an action name, or a rating (a number, 0-10 scale, MovieLens uses 1-5)."""
        if isinstance(signal, int | float) and not isinstance(signal, bool):
            event = Interaction(
                user=user, item=item, action=Action.RATE, rating=float(signal), text=text, timestamp=at or _now()
            )
        else:
            event = Interaction(user=user, item=item, action=Action(signal), text=text, timestamp=at or _now())
        await self.observe([event])
        return event

    async def state(self, user: str, preferences: Iterable[StatedPreference]) -> None:
        """Record preferences the user stated in words (the chat agent extracts them)."""
        await self._require().statements.add(list(preferences))

    # -- recommending -----------------------------------------------------------------------------

    async def recommend(
        self,
        user: str,
        k: int = 10,
        *,
        query: str | None = None,
        filters: Filters | None = None,
        explain: bool | None = None,
        exclude: Iterable[str] = (),
        now: datetime | None = None,
        understand: bool = True,
    ) -> RecommendationList:
        """The top ``k`` for ``user``: never an item they consumed, never a duplicate (nor a second copy of
        a title), always ``min(k, available)`` items. ``query`` is free text ("comedies from the 90s, no
        kids' movies"); with ``understand`` the constraints it states (genres wanted and refused, years)
        are added to ``filters`` and enforced by retrieval (agent/requests.py)."""
        computed, body, seconds = await self._answer(
            user, k, query=query, filters=filters, explain=explain, exclude=exclude, now=now, understand=understand
        )
        if computed is not None:
            return computed
        return RecommendationList.model_validate_json(answer_json(body, seconds, cached=True))

    async def recommend_json(self, user: str, k: int = 10, **options: Any) -> str:
        """``recommend``'s answer (same options) as JSON text, serialized once: the text kept for a repeat
        of the request is what is sent, and a repeat sends it without building the answer (the HTTP path)."""
        computed, body, seconds = await self._answer(user, k, **options)
        return answer_json(body, seconds, cached=computed is None)

    async def _answer(
        self,
        user: str,
        k: int,
        *,
        query: str | None = None,
        filters: Filters | None = None,
        explain: bool | None = None,
        exclude: Iterable[str] = (),
        now: datetime | None = None,
        understand: bool = True,
    ) -> tuple[RecommendationList | None, str, float]:
        """The answer computed (with its kept body), or None and the body of the kept answer reused; and the
        seconds it took."""
        if k < 1:
            raise ValueError("k must be at least 1")
        memory = self._require()
        exclude = frozenset(exclude)
        if query and understand:
            filters, query = self.understand(query, filters)
        started = time.perf_counter()
        deadline = time.monotonic() + self.settings.ranking.timeout_s  # from arrival: retrieval counts too
        now_given, now = now, now or _now()
        await self._maybe_refit()
        asked = self._request_key(k, query, filters, explain, exclude) if now_given is None else None  # not a replay
        assert self.generator is not None and self.reranker is not None
        n = max(self.settings.retrieval.candidates, self.settings.ranking.candidates, k)
        generator, fusion = self.generator, self.learned is None or self.features is None

        def prepare(read: RankingInputs) -> tuple[RetrievalRequest, list[str], dict[str, Scored] | None]:
            """Where the read was made (the event loop, or the read's worker thread): the retrieval request, the
            genres to push back, and (fusion order) the in-memory sources' lists — a computed answer takes at
            most one hop for its reads and sources."""
            session = open_session(read.history, memory.gap, now)  # the open session, from the same read
            excluded, demoted = standing(read.edits, read.history, self.catalog)
            request = RetrievalRequest(
                user=user,
                history=read.history,
                now=now,
                session=session.interactions if session else (),
                profile_vector=read.vector,
                query=query,
                filters=_with_stated(filters, read.stated, excluded),
                exclude=exclude,
            )
            return request, demoted, generator.generated_in_memory_blocking(request, n) if fusion else None

        # On the event loop as far as they go without blocking it (``Memory.reads_locally``): SQLite's reads of a
        # local file; PostgreSQL's state and a user's history over an asynchronous driver, then what this
        # process holds in memory
        state = None
        if memory.db.async_reads:
            state = await memory.state(user, now)
            if asked is not None and (kept := self.answers.reusable(user, (asked, state))) is not None:
                return None, kept, round(time.perf_counter() - started, 3)
            await memory.read_ahead(user, state)  # a user with only events: their history read here too
        kept, read, state, prepared = (
            self._read_blocking(memory, user, now, asked, prepare, state, local_only=True)
            if memory.db.local_reads or state is not None
            else (None, None, state, None)
        )
        if kept is None and read is None:  # one worker-thread hop for the rest (PostgreSQL: every read)
            kept, read, state, prepared = await asyncio.to_thread(
                self._read_blocking, memory, user, now, asked, prepare, state
            )
        if kept is not None:
            return None, kept, round(time.perf_counter() - started, 3)
        assert read is not None and state is not None and prepared is not None
        key = (asked, state) if asked is not None and read.vector_error is None else None  # a degraded read: compute
        history, profile, vector_problem = read.history, read.profile, read.vector_error
        summaries, stated = read.summaries, read.stated
        request, demoted, in_memory = prepared  # request.filters: the caller's, with the user's stated refusals
        given = (generator, in_memory) if in_memory is not None else None
        # Nothing re-orders the pool (no LLM ranking, no genre pushed back): the answer is its first k eligible
        # candidates, so fusion builds k + POOL_SLACK of them — a prefix of the whole pool in the same order,
        # after the same filters (each keeps or drops a candidate by those before it) — and the whole pool only
        # when that prefix leaves fewer than k. ~170 objects a request less (docs/benchmarks.md).
        keep = n if self.reranker.reorders() or demoted else min(n, k + POOL_SLACK)
        ordered, stage = await self._candidates(request, n, given, keep=keep)
        candidates = _distinct_titles(ordered, request.seen, self._title_keys, self._title_members)
        if len(candidates) < k and stage == "fusion" and len(ordered) == keep < n:  # the prefix fell short
            ordered, stage = await self._candidates(request, n, given)
            candidates = _distinct_titles(ordered, request.seen, self._title_keys, self._title_members)
        candidates = _demote(candidates, demoted, request.filters)
        context = build_context(
            user,
            candidates,
            k,
            history=history,
            catalog=self.catalog,
            profile=profile,
            profile_text=profile_document(profile) if profile.version else "",
            summaries=summaries,
            summary_texts=[summary_document(s, memory.titles) for s in summaries] + [_stated_text(s) for s in stated],
            # the latest items are shown only in an LLM's prompt: with no LLM they are not built (~25 us)
            recent_items=self.settings.ranking.recent_items if self.reranker.llm is not None else 0,
            query=query,
            exclude=exclude,
        )
        with acting_for(memory.tag(user)):
            phase = self.second_phase if stage == "learned" else None
            result = await self.reranker.rank(context, explain=explain, deadline=deadline, second_phase=phase)
        failed = [f"{source}: {why}" for source, why in request.failed.items()]
        problems = [e for e in (self.learned_error, vector_problem, *failed, result.error) if e]
        answer = RecommendationList(
            user=user,
            items=result.recommendations,
            degraded=result.degraded or self.learned_error is not None or vector_problem is not None or bool(failed),
            ranking=result.mode,
            order=stage,
            prompt=result.prompt_id,
            candidates=len(candidates),
            error="; ".join(problems) or None,
            seconds=round(time.perf_counter() - started, 3),
        )
        return answer, self.answers.remember(user, key, answer), answer.seconds

    def _read_blocking(
        self,
        memory: Memory,
        user: str,
        now: datetime,
        asked: tuple[Any, ...] | None,
        prepare: Callable[[RankingInputs], T],
        state: tuple[Any, ...] | None = None,
        *,
        local_only: bool = False,
    ) -> tuple[str | None, RankingInputs | None, tuple[Any, ...], T | None]:
        """The user's stored state (one statement; unless ``state`` was just read), and the body of the answer
        kept under it and ``asked`` when there is one — else everything a computation reads, and ``prepare`` of
        it: in one worker-thread hop, or on the event loop with ``local_only``, which stops after the state when
        the rest is not all local reads (neither read nor answer returned: the caller hops for the rest). The
        state is read first: a write between the two reads leaves the answer keyed to the older state, so the
        next request computes again instead of reusing an answer to a state that never was. It is read with no
        answer to reuse too: the stores it counts empty for the user are then not asked (on PostgreSQL a round
        trip each, and a wait for the GIL after each under load)."""
        if state is None:
            state = memory.state_blocking(user, now)
            if asked is not None and (kept := self.answers.reusable(user, (asked, state))) is not None:
                return kept, None, state, None
        if local_only and not memory.reads_locally(user, state):
            return None, None, state, None
        read = memory.ranking_inputs_blocking(user, now, state)
        return None, read, state, prepare(read)

    def _request_key(
        self, k: int, query: str | None, filters: Filters | None, explain: bool | None, exclude: frozenset[str]
    ) -> tuple[Any, ...]:
        """Everything a live answer is computed from but the clock and the user's stored state (see
        agent/answers.py): the request as given, and this process's indexes and rankers — the indexes'
        event position only with ``answer_follows_indexes`` (else other users' events reach a kept answer
        within its time to live)."""
        return (
            k,
            query,
            filters.model_dump_json() if filters is not None else None,
            explain,
            exclude,
            self._fitted_position if self.settings.ranking.answer_follows_indexes else None,
            self._generation,
            id(self.generator),
            id(self.features),
            id(self.learned),
            id(self.second_phase),
            self.learned_error,
        )

    def understand(self, query: str, filters: Filters | None = None) -> tuple[Filters | None, str]:
        """The constraints ``query`` states, added to ``filters``; and the query text without its refusals."""
        said = parse_request(query, self.genres(), latest_year=self.latest_year)
        given = filters or Filters()
        both = Constraints(given.genres, given.exclude_genres, given.year_min, given.year_max).merged(said)
        if given.genres:  # the caller's genres are a bound: the query may refuse within them, never widen them
            both = replace(both, genres=[g for g in given.genres if g not in both.exclude_genres])
        return both.filters(), said.query or query

    def last_recommendations(self, user: str) -> RecommendationList | None:
        """The latest answer given to ``user`` in this process (for "why did you recommend X?")."""
        return self.answers.last(user)

    async def search(self, text: str, *, filters: Filters | None = None, n: int = 10) -> list[Item]:
        """Catalog search by meaning (vector search in Chroma), with optional filters."""
        self._require()
        assert self.index is not None
        hits = await self.index.search_text(text, n, filters=filters)
        return [self.catalog[i] for i, _ in hits if i in self.catalog]

    def item(self, item: str) -> Item:
        try:
            return self.catalog[item]
        except KeyError:
            raise UnknownItem(item) from None

    def find_item(self, text: str) -> Item | None:
        """An item by id or (case-insensitive, year optional) title; None if there is no such item."""
        if text in self.catalog:
            return self.catalog[text]
        wanted = text.strip().lower()
        for item in self.catalog.values():
            title = item.title.lower()
            if title == wanted or title.rsplit(" (", 1)[0] == wanted:
                return item
        return None

    # -- profiles ---------------------------------------------------------------------------------

    async def profile(self, user: str) -> InterestProfile:
        """The current profile (from the database alone: it reads with Chroma down)."""
        return (await self._require().profile(user, vector=False))[0]

    async def edit_profile(self, user: str, edits: list[ProfileEdit]) -> InterestProfile:
        """The user's own corrections (add or remove an interest or a dislike): a new profile version
        at once, upheld by later LLM updates until the user's events after it say otherwise. Added
        dislikes leave the next recommendations; removed interests move behind the rest.

        Raises InvalidEvent (``loc`` names the edit) for a name that is not one of the catalog's genres."""
        try:
            return await self._require().edit_profile(user, edits)
        except InvalidEdit as exc:
            raise InvalidEvent(str(exc), ["body", "edits", exc.index, "name"]) from exc

    def genres(self) -> list[str]:
        """What an interest or dislike can be named (the catalog's genres)."""
        memory = self._require()
        return list(memory.vocabulary or sorted({g for i in self.catalog.values() for g in i.genres}))

    async def profile_history(self, user: str) -> list[InterestProfile]:
        return await self._require().history(user)

    async def refresh_profile(
        self, user: str, now: datetime | None = None, *, max_sessions: int | None = None
    ) -> RefreshResult:
        """Summarize the user's closed sessions (at most ``max_sessions`` now) and fold them into a new
        profile version. Sessions left over are handed to the upkeep worker, when it runs."""
        memory = self._require()
        result = await memory.refresh_profile(user, now, max_sessions=max_sessions)
        if result.remaining and self.upkeep is not None:
            await asyncio.to_thread(memory.schedule_blocking, {user: 0.0})
            self.upkeep.poke()
        return result

    async def store_ok(self) -> bool:
        """Whether the memory store answers right now (for health checks; never raises)."""
        try:
            await asyncio.to_thread(self._require().db.ping)
        except Exception:  # any failure means "not answering"
            return False
        return True

    async def vectors_ok(self) -> bool:
        """Whether the vector store (Chroma) answers right now (for health checks; never raises)."""
        try:
            assert self.index is not None
            await self.index.count()
        except Exception:  # any failure means "not answering"
            return False
        return True

    def keys(self) -> KeyStore:
        """The API keys (admin and per user) of this store; ``driftrec keys`` makes and revokes them."""
        return self._require().keys

    async def forget_user(self, user: str) -> ForgetReport:
        """Delete everything stored about ``user`` from every store (events, sessions, summaries, chats,
        stated preferences, every profile version, their LLM cache entries and prompt log); returns what
        each store held."""
        memory = self._require()
        await self.refresher.drop(user)  # first: an answer in flight would keep them after the rest is gone
        report = await memory.forget_user(user)
        self.answers.forget(user)
        if report.rows.get("events"):  # their events leave co-occurrence, popularity and the saved indexes
            _, generation = await asyncio.to_thread(memory.events.state_blocking)
            deleted = await asyncio.to_thread(self.snapshots.prune, generation)
            report.files["index_snapshots"] = len(deleted)
            self._refit_whole()
        return report

    # -- chat -------------------------------------------------------------------------------------

    def chat_agent(self) -> ChatAgent:
        """The chat agent, wired once with what it uses."""
        memory = self._require()
        if self._agent is None:
            self._agent = ChatAgent(
                self.llm, RecommenderTools(self), memory.conversations, memory.statements, self.chat_options()
            )
        return self._agent

    def chat_options(self) -> ChatOptions:
        """Chat mode ``auto``: native tool calls when the served model has them (an embedded model with a
        tool parser, or any remote endpoint: a failed call degrades to plan mode), else plan-first."""
        s = self.settings
        mode = s.chat.mode
        if mode == "auto":
            tool_calls = (
                s.model_gguf_path is None and embedded_model(s.model).tool_parser is not None if s.embedded else True
            )
            mode = "tools" if tool_calls else "plan"
        memory = self._require()
        return ChatOptions(
            mode=mode,
            tool_choice=s.chat.tool_choice,
            vocabulary=tuple(memory.vocabulary) if memory.vocabulary else ChatOptions().vocabulary,
            statement_hours=s.memory.statement_hours,
            history_tokens=s.chat.history_tokens,
            latest_year=self.latest_year,
        )

    async def chat(self, user: str, message: str) -> AsyncIterator[str]:
        """Talk to the recommender; yields the reply as it is written (``last_turn`` says how it went)."""
        agent = self.chat_agent()
        with acting_for(self._require().tag(user)):
            async for piece in agent.reply(user, message):
                yield piece

    def last_turn(self, user: str) -> TurnInfo | None:
        """How the user's latest chat turn was handled: mode, tool, arguments, why it degraded."""
        return self._agent.last_turn.get(user) if self._agent is not None else None


def _title_key(title: str) -> str:
    """A title without its year and case: MovieLens lists some films under two ids."""
    return re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip().lower()


def title_keys(catalog: Mapping[str, Item]) -> dict[str, str]:
    """item id -> its title key, made once per catalog (not per request)."""
    return {item_id: _title_key(item.title) for item_id, item in catalog.items()}


def title_members(keys: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """title key -> the ids listed under it (MovieLens lists some films under two), made once per catalog."""
    members: dict[str, list[str]] = {}
    for item_id, key in keys.items():
        members.setdefault(key, []).append(item_id)
    return {key: tuple(ids) for key, ids in members.items()}


def _distinct_titles(
    candidates: list[Candidate], seen: frozenset[str], keys: Mapping[str, str], members: Mapping[str, tuple[str, ...]]
) -> list[Candidate]:
    """Candidates without a second copy of a title, nor a copy of a title the user already consumed or
    excluded (``seen``): each candidate's title is looked up, not every item of the user's history."""
    taken: set[str] = set()
    out = []
    for candidate in candidates:
        key = keys.get(candidate.item.id) or _title_key(candidate.item.title)
        if key in taken or not seen.isdisjoint(members.get(key, ())):
            continue
        taken.add(key)
        out.append(candidate)
    return out


def _demote(candidates: list[Candidate], genres: Sequence[str], filters: Filters | None) -> list[Candidate]:
    """Interests the user removed from their profile: their items move behind the others (kept, in
    order), unless the request asks for that genre."""
    asked = set(filters.genres) if filters else set()
    pushed = {g for g in genres if g not in asked}
    if not pushed:
        return candidates
    keep = [c for c in candidates if not pushed & set(c.item.genres)]
    return keep + [c for c in candidates if pushed & set(c.item.genres)]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
POOL_SLACK = 10  # candidates built past k when nothing re-orders the pool: room for the title filter's drops


def _now() -> datetime:
    return datetime.now(UTC)


def _stated_text(statement: StatedPreference) -> str:
    verb = "wants more" if statement.polarity == "like" else "does not want"
    return f"The user said they {verb} {statement.name} right now" + (
        f' ("{statement.text}")' if statement.text else ""
    )


def _with_stated(filters: Filters | None, stated: list[StatedPreference], edited: Sequence[str] = ()) -> Filters | None:
    """Stated dislikes (for the session) and dislikes the user set in their profile (until their events
    overturn them) become excluded genres, unless the request asks for them."""
    dislikes = list(dict.fromkeys([*(s.name for s in stated if s.polarity == "dislike"), *edited]))
    if not dislikes:
        return filters
    filters = filters or Filters()
    asked = set(filters.genres)
    extra = [g for g in dislikes if g not in asked and g not in filters.exclude_genres]
    return filters.model_copy(update={"exclude_genres": [*filters.exclude_genres, *extra]})
