"""The candidate stage: ask every source, fuse, keep provenance."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from driftrec.config import RetrievalSettings
from driftrec.models import Candidate, Interaction, Item, Provenance, trusted
from driftrec.retrieval.fusion import rrf
from driftrec.retrieval.log import EventColumns, UserCodes
from driftrec.retrieval.sources import (
    CoOccurrenceIndex,
    PopularityIndex,
    RetrievalRequest,
    Scored,
    TransitionIndex,
    VectorSource,
)
from driftrec.retrieval.store import ItemIndex, VectorStoreUnavailable

SOURCES = ("vector", "cooc", "transition", "popularity")

log = logging.getLogger(__name__)


@dataclass
class Indexes:
    """The candidate indexes fitted on the event log (the vector source reads Chroma instead)."""

    cooc: CoOccurrenceIndex
    transition: TransitionIndex
    popularity: PopularityIndex

    def fit_columns(self, log: EventColumns, catalog_ids: list[str], n_users: int) -> Indexes:
        self.cooc.fit_columns(log, catalog_ids, n_users)
        self.transition.fit_columns(log, catalog_ids, n_users)
        self.popularity.fit_columns(log, catalog_ids)
        return self

    def update(self, new: EventColumns, n_users: int) -> None:
        """Take in events recorded after the fit (blocking; cost in proportion to the new events)."""
        self.cooc.update(new, n_users)
        self.transition.update(new, n_users)
        self.popularity.update(new)

    def params(self) -> dict[str, float]:
        """The settings a saved state depends on (retrieval/snapshot.py refuses a state made with others)."""
        return {
            "window": self.cooc.window,
            "recent": self.cooc.recent,
            "decay": self.cooc.decay,
            "transition_window": self.transition.window,
            "transition_recent": self.transition.recent,
            "transition_decay": self.transition.decay,
            "transition_step_decay": self.transition.step_decay,
            "transition_backward": self.transition.backward,
            "popularity_days": self.popularity.window.total_seconds() / 86400,
        }


def empty_indexes(retrieval: RetrievalSettings) -> Indexes:
    """Unfitted co-occurrence, transition and popularity indexes with this configuration."""
    cooc = CoOccurrenceIndex(
        window=retrieval.cooc_window,
        recent=retrieval.cooc_recent,
        decay=retrieval.cooc_decay,
        seed_neighbours=retrieval.seed_neighbours,
    )
    transition = TransitionIndex(
        window=retrieval.transition_window,
        recent=retrieval.transition_recent,
        decay=retrieval.transition_decay,
        step_decay=retrieval.transition_step_decay,
        backward=retrieval.transition_backward,
        seed_neighbours=retrieval.seed_neighbours,
    )
    return Indexes(cooc, transition, PopularityIndex(window_days=retrieval.popularity_days))


class CandidateGenerator:
    """Vector + co-occurrence + transition + popularity candidates, fused, with each item's per-source rank
    and score."""

    def __init__(
        self,
        index: ItemIndex,
        catalog: Mapping[str, Item],
        *,
        vector: VectorSource,
        indexes: Indexes,
        fusion: str = "rrf",
        rrf_k: int = 60,
        weights: Mapping[str, float] | None = None,
        query_vector_weight: float = 1.0,
    ):
        self.index = index
        self.catalog = catalog
        self.vector = vector
        self.indexes = indexes
        self.fusion = fusion
        self.rrf_k = rrf_k
        self.weights = dict(weights or {})
        self.query_vector_weight = query_vector_weight

    @classmethod
    def build(
        cls,
        retrieval: RetrievalSettings,
        index: ItemIndex,
        catalog: Mapping[str, Item],
        interactions: Iterable[Interaction],
    ) -> CandidateGenerator:
        """Fit the co-occurrence and popularity indexes on an interaction log (evaluation splits, tests)."""
        ids = list(catalog)
        users = UserCodes()
        log = EventColumns.from_interactions(interactions, {item: i for i, item in enumerate(ids)}, users)
        return cls.build_from_columns(retrieval, index, catalog, log, len(users))

    @classmethod
    def build_from_columns(
        cls,
        retrieval: RetrievalSettings,
        index: ItemIndex,
        catalog: Mapping[str, Item],
        log: EventColumns,
        n_users: int,
    ) -> CandidateGenerator:
        """Fit on the log as columns (the event store's streaming read; items are positions in ``catalog``)."""
        indexes = empty_indexes(retrieval).fit_columns(log, list(catalog), n_users)
        return cls.from_indexes(retrieval, index, catalog, indexes)

    @classmethod
    def from_indexes(
        cls,
        retrieval: RetrievalSettings,
        index: ItemIndex,
        catalog: Mapping[str, Item],
        indexes: Indexes,
    ) -> CandidateGenerator:
        """Wire fitted (or loaded: retrieval/snapshot.py) indexes."""
        vector = VectorSource(
            index,
            alpha=retrieval.alpha,
            session_items=retrieval.session_items,
            query_weight=retrieval.query_weight,
        )
        return cls(
            index,
            catalog,
            vector=vector,
            indexes=indexes,
            fusion=retrieval.fusion,
            rrf_k=retrieval.rrf_k,
            weights=retrieval.weights,
            query_vector_weight=retrieval.query_vector_weight,
        )

    @property
    def cooc(self) -> CoOccurrenceIndex:
        return self.indexes.cooc

    @property
    def transition(self) -> TransitionIndex:
        return self.indexes.transition

    @property
    def popularity(self) -> PopularityIndex:
        return self.indexes.popularity

    def update(self, new: EventColumns, n_users: int) -> None:
        """Take in events recorded after the fit (blocking; cost in proportion to the new events)."""
        self.indexes.update(new, n_users)

    def weights_for(self, request: RetrievalRequest) -> dict[str, float] | None:
        """The fusion weights for this request (None: plain RRF). Free text gives the vector source a voice."""
        if self.fusion != "weighted":
            return None
        weights = {source: self.weights.get(source, 1.0) for source in SOURCES}
        if request.query:
            weights["vector"] = max(weights["vector"], self.query_vector_weight)
        return weights

    def in_memory_blocking(
        self, request: RetrievalRequest, n: int, sources: Iterable[str] = SOURCES
    ) -> dict[str, Scored]:
        """The in-memory sources among ``sources``, each's top ``n`` (blocking: the caller's worker thread)."""
        index = {"cooc": self.cooc, "transition": self.transition, "popularity": self.popularity}
        asked = set(sources)
        wanted = [s for s in SOURCES if s in asked and s in index]
        return {s: index[s].candidates_blocking(request, n, self.catalog) for s in wanted}

    def generated_in_memory_blocking(self, request: RetrievalRequest, n: int = 50) -> dict[str, Scored]:
        """What ``generate(request, n)`` asks the in-memory sources, asked now (blocking): a caller already in
        a worker thread (the recommender's read of the user) hands it to ``generate`` as ``in_memory``, which
        then needs no hop of its own for them."""
        weights = self.weights_for(request)
        return self.in_memory_blocking(request, 2 * n, [s for s in SOURCES if weights is None or weights[s] > 0])

    async def per_source(
        self,
        request: RetrievalRequest,
        n: int,
        *,
        alpha: float | None = None,
        sources: Iterable[str] = SOURCES,
        in_memory: Mapping[str, Scored] | None = None,
    ) -> dict[str, Scored]:
        """Each source's own top ``n``: vector search (a Chroma call) concurrently with the in-memory sources,
        which run together in one worker-thread hop (each takes well under a millisecond: a hop apiece would
        cost more than it overlaps) unless ``in_memory`` has their lists already. A source whose store does
        not answer (Chroma down) contributes nothing and is named in ``request.failed``: the answer degrades,
        it does not fail."""
        wanted = [s for s in SOURCES if s in set(sources)]
        given = dict(in_memory or {})
        local = [s for s in wanted if s != "vector" and s not in given]

        def asked() -> list[Scored]:
            found = self.in_memory_blocking(request, n, local)
            return [found[s] for s in local]

        vector = self.vector.candidates(request, n, alpha) if "vector" in wanted else None
        memory = asyncio.to_thread(asked) if local else None
        done = iter(await asyncio.gather(*(c for c in (vector, memory) if c is not None), return_exceptions=True))
        outcome: dict[str, Scored | BaseException] = {}
        if vector is not None:
            outcome["vector"] = next(done)
        if memory is not None:
            got = next(done)
            outcome |= {s: got if isinstance(got, BaseException) else got[i] for i, s in enumerate(local)}
        outcome |= {s: given[s] for s in wanted if s in given}
        lists: dict[str, Scored] = {}
        for source in wanted:
            result = outcome[source]
            if isinstance(result, VectorStoreUnavailable):
                log.warning("candidate source %s skipped: %s", source, result)
                request.failed[source] = "the vector store (Chroma) did not answer"
                lists[source] = []
            elif isinstance(result, BaseException):
                raise result
            else:
                lists[source] = result
        return lists

    def fuse(self, lists: Mapping[str, Scored], n: int, weights: Mapping[str, float] | None = None) -> list[Candidate]:
        """The fused top ``n`` as candidates, each with its rank and score in every list that had it."""
        fused = [
            (item, score)
            for item, score in rrf(
                {s: [i for i, _ in hits] for s, hits in lists.items()}, k=self.rrf_k, weights=weights
            )[:n]
            if item in self.catalog
        ]
        kept = {item for item, _ in fused}
        provenance: dict[str, list[Provenance]] = {}
        for source, hits in lists.items():
            for rank, (item, score) in enumerate(hits, start=1):
                if item in kept:  # built for the items kept only
                    provenance.setdefault(item, []).append(
                        trusted(Provenance, {"source": source, "score": score, "rank": rank})
                    )
        return [
            trusted(Candidate, {"item": self.catalog[item], "score": score, "provenance": provenance[item]})
            for item, score in fused
        ]

    async def generate(
        self,
        request: RetrievalRequest,
        n: int = 50,
        *,
        per_source: int | None = None,
        in_memory: Mapping[str, Scored] | None = None,
        keep: int | None = None,
    ) -> list[Candidate]:
        """The fused top ``n``; each source with a non-zero weight contributes its top ``per_source`` (default 2n).
        ``in_memory``: ``generated_in_memory_blocking(request, n)``, when the caller asked it in its own hop.
        ``keep``: build only the first ``keep`` of them — the same scores and order, so always a prefix of the
        top ``n`` — for a caller that reads no further (no LLM re-ranks the pool).

        A user with no history gets popularity (and, with a query, vector) candidates: the cold start.
        """
        weights = self.weights_for(request)
        active = [s for s in SOURCES if weights is None or weights[s] > 0]
        if in_memory is not None and per_source not in (None, 2 * n):
            raise ValueError("in_memory lists are each source's top 2n: per_source must be left out")
        keep = n if keep is None else min(keep, n)
        lists = await self.per_source(request, per_source or 2 * n, sources=active, in_memory=in_memory)
        fused = self.fuse(lists, keep, weights)
        if len(fused) < keep and "vector" not in active:
            # A young event log gives co-occurrence and popularity little to say: vector search fills in (asked
            # for as many as the whole top n would ask, so a shorter list is still a prefix of it).
            have = {c.item.id for c in fused}
            extra = await self.per_source(request, n + len(have), sources=["vector"])
            tail = [(i, s) for i, s in extra["vector"] if i not in have][: keep - len(fused)]
            fused += self.fuse({"vector": tail}, len(tail))
        return fused
