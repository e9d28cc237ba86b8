"""Candidate sources: vector search, item-to-item co-occurrence, recent popularity.

Each source returns items with scores, best first, never an item the user already consumed, and only
items that pass the filters. Sources are fitted on an interaction log (production: the event store;
evaluation: the training split), so what they know is exactly what they were shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from scipy import sparse

from driftrec.models import Filters, Interaction, Item
from driftrec.retrieval.embeddings import normalize
from driftrec.retrieval.store import ItemIndex

Scored = list[tuple[str, float]]


@dataclass
class RetrievalRequest:
    """Everything a source may look at for one user at one moment."""

    user: str
    history: Sequence[Interaction]  # every interaction of the user so far, oldest first
    now: datetime
    session: Sequence[Interaction] = ()  # the open session (short-term context); empty: the latest items
    profile_vector: np.ndarray | None = None  # u_l from the long-term profile; None: from the history
    query: str | None = None  # free text from chat
    filters: Filters | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)  # on top of the history

    @property
    def seen(self) -> frozenset[str]:
        return frozenset(e.item for e in self.history) | self.exclude


def _allowed(item_id: str, catalog: Mapping[str, Item], filters: Filters | None) -> bool:
    item = catalog.get(item_id)
    return item is not None and (filters is None or filters.matches(item))


class VectorSource:
    """Nearest items to u_f = alpha * u_s + (1 - alpha) * u_l, optionally blended with a text query."""

    name = "vector"

    def __init__(self, index: ItemIndex, *, alpha: float = 0.5, session_items: int = 10, query_weight: float = 0.5):
        self.index = index
        self.alpha = alpha
        self.session_items = session_items
        self.query_weight = query_weight

    async def user_vector(self, request: RetrievalRequest, alpha: float | None = None) -> np.ndarray | None:
        alpha = self.alpha if alpha is None else alpha
        short = list(request.session) or list(request.history[-self.session_items :])
        ids = [e.item for e in short] + [e.item for e in request.history]
        vectors = await self.index.vectors(ids)
        u_s = _mean([vectors.get(e.item) for e in short], recency=True)
        u_l = (
            request.profile_vector
            if request.profile_vector is not None
            else _mean(
                [vectors.get(e.item) for e in request.history], weights=[_rating_weight(e) for e in request.history]
            )
        )
        return fuse_user_vector(u_s, u_l, alpha)

    async def candidates(self, request: RetrievalRequest, n: int, alpha: float | None = None) -> Scored:
        vector = await self.user_vector(request, alpha)
        if request.query:
            q = (await self.index.embedder.aembed_queries([request.query]))[0]
            vector = q if vector is None else normalize(self.query_weight * q + (1 - self.query_weight) * vector)
        if vector is None:
            return []
        return await self.index.query(vector, n, filters=request.filters, exclude=request.seen)


def _rating_weight(event: Interaction) -> float:
    """Liked items pull the long-term vector more than disliked ones (ratings on a 1-5 scale)."""
    return 1.0 if event.rating is None else max(event.rating - 2.0, 0.25)


def _mean(
    vectors: list[np.ndarray | None], *, recency: bool = False, weights: list[float] | None = None
) -> np.ndarray | None:
    pairs = [(v, 1.0 if weights is None else weights[i]) for i, v in enumerate(vectors) if v is not None]
    if not pairs:
        return None
    matrix = np.stack([v for v, _ in pairs])
    w = np.array([w for _, w in pairs], dtype=np.float32)
    if recency:  # later items count more: the short-term vector follows what the user does now
        w = w * np.linspace(0.5, 1.0, len(pairs), dtype=np.float32)
    return normalize((w[:, None] * matrix).sum(axis=0))


def fuse_user_vector(u_s: np.ndarray | None, u_l: np.ndarray | None, alpha: float) -> np.ndarray | None:
    """u_f = alpha * u_s + (1 - alpha) * u_l, each side normalized first; a missing side is skipped."""
    if u_s is None and u_l is None:
        return None
    if u_s is None or alpha == 0.0:
        return normalize(u_l) if u_l is not None else normalize(u_s)
    if u_l is None or alpha == 1.0:
        return normalize(u_s)
    return normalize(alpha * normalize(u_s) + (1 - alpha) * normalize(u_l))


class CoOccurrenceIndex:
    """Items consumed close together in users' sequences, cosine-normalized, seeded by recent items."""

    name = "cooc"

    def __init__(self, *, window: int = 10, recent: int = 20, decay: float = 0.9):
        self.window = window
        self.recent = recent
        self.decay = decay
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.matrix = sparse.csr_matrix((0, 0), dtype=np.float32)

    def fit(self, sequences: Iterable[Sequence[Interaction]], catalog: Iterable[str]) -> CoOccurrenceIndex:
        self.ids = list(dict.fromkeys(catalog))
        self.position = {item: i for i, item in enumerate(self.ids)}
        rows: list[int] = []
        cols: list[int] = []
        for sequence in sequences:
            idx = [self.position[e.item] for e in sequence if e.item in self.position]
            for i, a in enumerate(idx):
                for b in idx[i + 1 : i + 1 + self.window]:
                    if a != b:
                        rows += (a, b)
                        cols += (b, a)
        n = len(self.ids)
        counts = sparse.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)).tocsr()
        counts.sum_duplicates()
        # each item's count of pairs it takes part in; cosine normalization damps the blockbusters
        totals = np.asarray(counts.sum(axis=1)).ravel()
        inv = sparse.diags(1.0 / np.sqrt(np.maximum(totals, 1.0)))
        self.matrix = (inv @ counts @ inv).tocsr().astype(np.float32)
        return self

    def scores(self, recent_items: Sequence[str]) -> np.ndarray:
        seeds = [self.position[i] for i in reversed(recent_items) if i in self.position][: self.recent]
        weights = np.zeros(len(self.ids), np.float32)
        for rank, pos in enumerate(seeds):
            weights[pos] += self.decay**rank
        return np.asarray(self.matrix.T @ weights).ravel()

    async def candidates(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        return await asyncio.to_thread(self._candidates, request, n, catalog)

    def _candidates(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        seeds = [e.item for e in (list(request.history) + list(request.session))]
        if not seeds or not self.ids:
            return []
        return _top(self.ids, self.scores(seeds), n, request, catalog)


class PopularityIndex:
    """Most interactions in a recent time window before ``now``: the cold-start source."""

    name = "popularity"

    def __init__(self, *, window_days: float = 30.0):
        self.window = timedelta(days=window_days)
        self.ids: list[str] = []
        self.times = np.zeros(0, np.float64)
        self.items = np.zeros(0, np.int64)

    def fit(self, interactions: Iterable[Interaction], catalog: Iterable[str]) -> PopularityIndex:
        self.ids = list(dict.fromkeys(catalog))
        position = {item: i for i, item in enumerate(self.ids)}
        pairs = sorted((e.timestamp.timestamp(), position[e.item]) for e in interactions if e.item in position)
        self.times = np.array([t for t, _ in pairs], np.float64)
        self.items = np.array([i for _, i in pairs], np.int64)
        return self

    def counts(self, now: datetime) -> np.ndarray:
        """Interactions per item in [now - window, now): nothing after ``now`` is ever counted."""
        lo, hi = np.searchsorted(self.times, [(now - self.window).timestamp(), now.timestamp()], side="left")
        return np.bincount(self.items[lo:hi], minlength=len(self.ids)).astype(np.float32)

    async def candidates(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        return await asyncio.to_thread(self._candidates, request, n, catalog)

    def _candidates(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        if not self.ids:
            return []
        counts = self.counts(request.now)
        if counts.sum() == 0:  # a quiet window: fall back to all-time counts before now
            hi = np.searchsorted(self.times, request.now.timestamp(), side="left")
            counts = np.bincount(self.items[:hi], minlength=len(self.ids)).astype(np.float32)
        return _top(self.ids, counts, n, request, catalog)


def _top(ids: list[str], scores: np.ndarray, n: int, request: RetrievalRequest, catalog: Mapping[str, Item]) -> Scored:
    """The ``n`` best positive scores, skipping seen and filtered-out items (ties: catalog order)."""
    seen = request.seen
    order = np.argsort(-scores, kind="stable")
    out: Scored = []
    for pos in order:
        if scores[pos] <= 0 or len(out) >= n:
            break
        item = ids[pos]
        if item not in seen and _allowed(item, catalog, request.filters):
            out.append((item, float(scores[pos])))
    return out
