"""Candidate sources: vector search, item-to-item co-occurrence, sequential transitions, recent popularity.

Each source returns items with scores, best first, never an item the user already consumed, and only
items that pass the filters. Sources are fitted on an interaction log (production: the event store;
evaluation: the training split), so what they know is exactly what they were shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from itertools import islice
from sys import intern

import numpy as np
from scipy import sparse

from driftrec.models import Filters, Interaction, Item, item_ids
from driftrec.retrieval.embeddings import normalize
from driftrec.retrieval.log import EventColumns, UserCodes
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
    failed: dict[str, str] = field(default_factory=dict)  # sources that could not answer it, and why

    _unseen: dict[int, tuple[Mapping[str, int], np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @cached_property
    def seen(self) -> frozenset[str]:
        """Items the user consumed, plus ``exclude`` (made once per request; every source asks)."""
        return frozenset(item_ids(self.history)) | self.exclude

    def unseen(self, position: Mapping[str, int], size: int) -> np.ndarray:
        """A mask over a source's catalog order (``position``: item -> index, ``size`` entries), False at the
        items of ``seen``: made once per request and order, so a source drops what the user consumed in one
        vectorized step instead of skipping it item by item (a MovieLens user has consumed ~100 of the best
        scored items of every source)."""
        kept = self._unseen.get(id(position))
        if kept is None or kept[0] is not position or len(kept[1]) != size:
            mask = np.ones(size, bool)
            at = np.fromiter((p for i in self.seen if (p := position.get(i)) is not None), np.int64)
            mask[at[at < size]] = False
            kept = self._unseen[id(position)] = (position, mask)
        return kept[1]


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


def catalog_order(catalog_ids: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """The ids in order and each one's position; sources fitted on the same catalog get the same two objects
    (the last order made is kept), so a request's mask of seen items (``RetrievalRequest.unseen``) is made
    once for all of them."""
    global _last_order
    ids = list(map(intern, catalog_ids))  # the objects the event cache holds (memory/events.py: _cached_form)
    if _last_order is None or _last_order[0] != ids:
        _last_order = (ids, {item: i for i, item in enumerate(ids)})
    return _last_order


_last_order: tuple[list[str], dict[str, int]] | None = None


def _steps_apart(
    users: np.ndarray, items: np.ndarray, window: int, later_new: np.ndarray | None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per distance d = 1..window: the items a and b of every two events of one user d steps apart, b
    later, a != b (``users``/``items`` sorted by user, then time; ``later_new``: only where b is new)."""
    for d in range(1, window + 1):
        if d >= len(users):
            return
        keep = (users[d:] == users[:-d]) & (items[d:] != items[:-d])
        if later_new is not None:
            keep &= later_new[d:]
        yield d, items[:-d][keep].astype(np.int32), items[d:][keep].astype(np.int32)  # int32: half the memory


def _pairs(users: np.ndarray, items: np.ndarray, window: int, later_new: np.ndarray | None = None) -> np.ndarray:
    """Co-occurring (a, b) item pairs, both directions: events at most ``window`` apart in one user's sequence
    (``users``/``items`` sorted by user, then time). ``later_new``: count only pairs whose later event is new."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for _, a, b in _steps_apart(users, items, window, later_new):
        rows += (a, b)
        cols += (b, a)
    if not rows:
        return np.zeros((2, 0), np.int32)
    return np.vstack([np.concatenate(rows), np.concatenate(cols)])


def _pull(parts: Sequence[tuple[sparse.csr_matrix, np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """sum over (matrix, rows, weights) of sum_s weights[s] * matrix[rows[s], :] as a dense vector of length
    ``n``, straight from the CSR arrays (no sliced matrix built per request), in one bincount."""
    columns: list[np.ndarray] = []
    values: list[np.ndarray] = []
    scales: list[np.ndarray] = []
    for matrix, rows, weights in parts:
        starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
        columns += [matrix.indices[a:b] for a, b in zip(starts, ends, strict=True)]
        values += [matrix.data[a:b] for a, b in zip(starts, ends, strict=True)]
        scales.append(np.repeat(weights, ends - starts))
    if not sum(len(c) for c in columns):
        return np.zeros(n, np.float64)
    weights = np.concatenate(values) * np.concatenate(scales)
    return np.bincount(np.concatenate(columns), weights=weights, minlength=n)


@dataclass(frozen=True)
class RowHeads:
    """The ``limit`` largest entries of every row of ``counts`` longer than that (rows of popular items at a
    large catalog), so a seed reads at most ``limit`` neighbours; other rows are read whole from ``counts``."""

    counts: sparse.csr_matrix  # the matrix these heads were cut from (a later one gets its own)
    long: np.ndarray  # per row: True when it is read from ``heads``
    heads: sparse.csr_matrix

    @classmethod
    def cut(cls, counts: sparse.csr_matrix, limit: int) -> RowHeads | None:
        """None when no row is longer than ``limit`` (or ``limit`` is 0): every row is read whole."""
        lengths = np.diff(counts.indptr)
        long_rows = np.flatnonzero(lengths > limit) if limit > 0 else np.zeros(0, np.int64)
        if not len(long_rows):
            return None
        columns, values = [], []
        for row in long_rows.tolist():
            a, b = counts.indptr[row], counts.indptr[row + 1]
            keep = np.sort(np.argpartition(-counts.data[a:b], limit - 1)[:limit])  # the largest, in column order
            columns.append(counts.indices[a:b][keep])
            values.append(counts.data[a:b][keep])
        indptr = np.zeros(counts.shape[0] + 1, np.int64)
        indptr[long_rows + 1] = limit
        heads = sparse.csr_matrix(
            (np.concatenate(values), np.concatenate(columns), np.cumsum(indptr)), shape=counts.shape
        )
        long = np.zeros(counts.shape[0], bool)
        long[long_rows] = True
        return cls(counts, long, heads)


def _counts(pairs: np.ndarray, n: int, weights: np.ndarray | None = None) -> sparse.csr_matrix:
    values = np.ones(pairs.shape[1], np.float32) if weights is None else weights
    counts = sparse.coo_matrix((values, (pairs[0], pairs[1])), shape=(n, n)).tocsr()
    counts.sum_duplicates()
    return counts


def _step_counts(
    users: np.ndarray,
    items: np.ndarray,
    n: int,
    window: int,
    step_decay: float,
    backward: float,
    later_new: np.ndarray | None = None,
) -> tuple[sparse.csr_matrix, int]:
    """Directed counts: (a, b) when b came ``d <= window`` events after a in one user's sequence, weighted
    ``step_decay^(d-1)``, plus (b, a) weighted ``backward`` times that (what came before b is weaker evidence
    of what follows it). Same input and ``later_new`` as ``_pairs``. The pairs of several distances are
    summed into one matrix once they reach ``STEP_PAIRS_HELD`` (a fit over a large log holds about one
    distance's pairs at a time; an update's handful of events builds one matrix, not one per distance: 11
    sparse matrices cost ~2.5 ms for 7 new events). Returns the counts and how many pairs went in."""
    counts = sparse.csr_matrix((n, n), dtype=np.float32)
    total = 0
    held: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, columns, weights)
    held_pairs = 0

    def summed(counts: sparse.csr_matrix) -> sparse.csr_matrix:
        rows, cols, weights = (np.concatenate(part) for part in zip(*held, strict=True))
        held.clear()
        return counts + _counts(np.vstack([rows, cols]), n, weights)

    for d, a, b in _steps_apart(users, items, window, later_new):
        if not len(a):
            continue
        weight = np.float32(step_decay ** (d - 1))
        held.append((a, b, np.full(len(a), weight)))
        if backward > 0:
            held.append((b, a, np.full(len(a), weight * np.float32(backward))))
        pairs = len(a) * (2 if backward > 0 else 1)
        total += pairs
        held_pairs += pairs
        if held_pairs >= STEP_PAIRS_HELD:
            counts, held_pairs = summed(counts), 0
    if held:
        counts = summed(counts)
    return counts.tocsr(), total


STEP_PAIRS_HELD = 1 << 22  # ~50 MB of (row, column, weight) triples before they are summed into the counts


class CoOccurrenceIndex:
    """Items consumed close together in users' sequences, cosine-normalized, seeded by recent items.

    Raw pair counts live in a sparse ``base`` plus a small ``delta`` that incremental updates add to
    (merged into ``base`` once it grows past a fraction of it), so taking in new events costs in proportion
    to them, not to the log. Scoring reads only the seed items' rows, and of each ``base`` row at most its
    ``seed_neighbours`` largest counts (0: all): at MovieLens-100K's 1,682 items no row is that long and
    scores are exact; at 100k items a popular seed's row holds up to ~40k items, most with counts of 1-2,
    and reading only the head keeps 99.5 % of the top 100 at a fifth of the work (docs/benchmarks.md)."""

    name = "cooc"
    MERGE_FRACTION = 0.1  # merge the delta into the base when it holds this share of the base's entries
    # a base this small (and with no row cut to its head) is also kept dense (MovieLens-100K's 1,682 items:
    # 11 MB): the seeds' rows are then read by one vector-matrix product, a third of the time of gathering
    # their CSR slices (docs/benchmarks.md)
    DENSE_BYTES = 32 << 20

    def __init__(self, *, window: int = 10, recent: int = 20, decay: float = 0.9, seed_neighbours: int = 2000):
        self.window = window
        self.recent = recent
        self.decay = decay
        self.seed_neighbours = seed_neighbours
        self._heads: RowHeads | None = None  # cut from ``base`` whenever it is replaced
        self._dense: tuple[sparse.csr_matrix, np.ndarray] | None = None  # (``base``, it dense) when small
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.base = sparse.csr_matrix((0, 0), dtype=np.float32)
        self.delta = sparse.csr_matrix((0, 0), dtype=np.float32)
        self.totals = np.zeros(0, np.float64)  # each item's count of pairs it takes part in (swapped, never edited)
        self._norms: tuple[np.ndarray, np.ndarray] | None = None  # (the totals they were made from, 1/sqrt)
        self.tails = np.zeros((0, window), np.int64)  # each user's last ``window`` items (-1: none)

    def fit(self, sequences: Iterable[Sequence[Interaction]], catalog: Iterable[str]) -> CoOccurrenceIndex:
        """Fit on users' sequences (each oldest first)."""
        ids = list(dict.fromkeys(catalog))
        codes = UserCodes()
        log = EventColumns.from_interactions(
            (e for sequence in sequences for e in sequence), {item: i for i, item in enumerate(ids)}, codes
        )
        return self.fit_columns(log, ids, len(codes))

    def fit_columns(self, log: EventColumns, catalog_ids: Sequence[str], n_users: int) -> CoOccurrenceIndex:
        """Fit on the whole log (columns whose items are positions in ``catalog_ids``)."""
        self.ids, self.position = catalog_order(catalog_ids)
        n = len(self.ids)
        ordered = log.known().by_user_in_time()
        counts, _ = self._count(ordered.users, ordered.items, None)
        self._set_base(counts)
        self.delta = sparse.csr_matrix((n, n), dtype=np.float32)
        self.totals = np.asarray(counts.sum(axis=1), np.float64).ravel()
        self.tails = np.full((n_users, self.window), -1, np.int64)
        self._remember_tails(ordered.users, ordered.items)
        return self

    def restore(
        self, catalog_ids: Sequence[str], counts: sparse.csr_matrix, totals: np.ndarray, tails: np.ndarray
    ) -> CoOccurrenceIndex:
        """Take a saved state (retrieval/snapshot.py): pair counts, per-item totals, per-user tails."""
        self.ids, self.position = catalog_order(catalog_ids)
        n = len(self.ids)
        self._set_base(counts)
        self.delta = sparse.csr_matrix((n, n), dtype=np.float32)
        self.totals, self.tails = totals, tails
        return self

    def update(self, new: EventColumns, n_users: int) -> int:
        """Take in new events (after everything fitted so far); returns how many pairs they added."""
        new = new.known().by_user_in_time()
        if not len(new):
            return 0
        if n_users > len(self.tails):
            grown = np.full((n_users, self.window), -1, np.int64)
            grown[: len(self.tails)] = self.tails
            self.tails = grown
        # each user's remembered tail, then their new events: pairs whose later event is new
        present = np.unique(new.users)
        tail_items = self.tails[present]
        has = tail_items >= 0
        users = np.concatenate([np.repeat(present, has.sum(axis=1)), new.users])
        items = np.concatenate([tail_items[has], new.items])
        is_new = np.concatenate([np.zeros(int(has.sum()), bool), np.ones(len(new), bool)])
        order = np.argsort(users, kind="stable")  # tails (oldest first) stay before the new events
        users, items, is_new = users[order], items[order], is_new[order]
        added, pairs = self._count(users, items, is_new)
        n = len(self.ids)
        delta = self.delta + added
        totals = self.totals + np.asarray(added.sum(axis=1), np.float64).ravel()
        if delta.nnz > self.MERGE_FRACTION * max(self.base.nnz, 1):
            self._set_base((self.base + delta).tocsr())
            self.delta = sparse.csr_matrix((n, n), dtype=np.float32)
        else:
            self.delta = delta.tocsr()
        self.totals = totals
        self._remember_tails(users, items)
        return pairs

    def _set_base(self, counts: sparse.csr_matrix) -> None:
        """Replace the base counts and cut their long rows' heads, or make them dense when they are small
        (before scoring reads them)."""
        heads = RowHeads.cut(counts, self.seed_neighbours)
        small = heads is None and 0 < counts.shape[0] * counts.shape[1] * 4 <= self.DENSE_BYTES
        self._dense = (counts, counts.toarray()) if small else None
        self._heads = heads
        self.base = counts

    def _count(
        self, users: np.ndarray, items: np.ndarray, later_new: np.ndarray | None
    ) -> tuple[sparse.csr_matrix, int]:
        """The pair counts of a stretch of the log (sorted by user, then time), and how many pairs."""
        pairs = _pairs(users, items, self.window, later_new=later_new)
        return _counts(pairs, len(self.ids)), pairs.shape[1]

    def _remember_tails(self, users: np.ndarray, items: np.ndarray) -> None:
        """Keep each user's last ``window`` items (``users``/``items`` sorted by user, then time)."""
        if not len(users):
            return
        ends = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
        starts = np.r_[0, ends[:-1] + 1]
        for user, start, end in zip(users[ends], starts, ends + 1, strict=True):
            last = items[max(start, end - self.window) : end]
            row = np.full(self.window, -1, np.int64)
            row[: len(last)] = last
            self.tails[user] = row

    def _inverse_norms(self) -> np.ndarray:
        """1 / sqrt(totals), made again only when the totals change (an update swaps the array)."""
        totals = self.totals
        known = self._norms
        if known is None or known[0] is not totals:
            known = self._norms = (totals, 1.0 / np.sqrt(np.maximum(totals, 1.0)))
        return known[1]

    def _seeds(self, recent_items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The latest ``recent`` known items as count rows, the n-th latest weighted decay^n (an item seen
        twice adds up); empty arrays when none is known."""
        known = (self.position[i] for i in reversed(recent_items) if i in self.position)
        seeds = list(islice(known, self.recent))  # the latest ones only: a history can be long
        weights: dict[int, float] = {}
        for rank, pos in enumerate(seeds):
            weights[pos] = weights.get(pos, 0.0) + self.decay**rank
        return np.fromiter(weights, np.int64, len(weights)), np.fromiter(weights.values(), np.float64, len(weights))

    def _pulled(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """sum_s weights[s] * counts[rows[s], :], base and delta alike (a long base row: its head only)."""
        base, heads, dense, n = self.base, self._heads, self._dense, len(self.ids)
        if dense is not None and dense[0] is base:  # a small catalog: every row whole, dense
            read = weights @ dense[1][rows]
        elif heads is not None and heads.counts is base and heads.long[rows].any():
            long = heads.long[rows]
            read = _pull([(base, rows[~long], weights[~long]), (heads.heads, rows[long], weights[long])], n)
        else:
            read = _pull([(base, rows, weights)], n)
        return read + _pull([(self.delta, rows, weights)], n) if self.delta.nnz else read

    def scores(self, recent_items: Sequence[str]) -> np.ndarray:
        """Every catalog item's score (0 where no seed's row reaches it)."""
        positions, values = self.touched_scores(recent_items)
        dense = np.zeros(len(self.ids), np.float32)
        dense[positions] = values
        return dense

    def touched_scores(self, recent_items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The items some seed's row reaches (ascending positions: catalog order) and their scores: what
        ``scores`` holds apart from its zeros, without a pass over the whole catalog per step."""
        rows, weights = self._seeds(recent_items)
        if not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        inv = self._inverse_norms()
        # symmetric counts: score_j = inv_j * sum_s counts[s, j] * inv_s * w_s, read from the seeds' rows only
        pulled = self._pulled(rows, weights * inv[rows])
        positions = np.flatnonzero(pulled > 0)  # a mask: 4x faster than nonzero over the floats at 100k items
        return positions, (inv[positions] * pulled[positions]).astype(np.float32)

    async def candidates(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        return await asyncio.to_thread(self.candidates_blocking, request, n, catalog)

    def candidates_blocking(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        seeds = item_ids(request.history) + item_ids(request.session)
        if not seeds or not self.ids:
            return []
        return top_touched(
            self.ids,
            *self.touched_scores(seeds),
            n,
            request,
            catalog,
            unseen=request.unseen(self.position, len(self.ids)),
        )


class TransitionIndex(CoOccurrenceIndex):
    """What users went on to consume after the items this user consumed last: directed, decayed by distance.

    Counts b following a within ``window`` events (weight ``step_decay^(d-1)``, and ``backward`` of it for a
    following b), normalized by each seed's total so a seed's row reads as "what comes next"; seeded by the
    user's ``recent`` latest items, the n-th latest weighted ``decay^n``. The co-occurrence index's machinery
    (base + delta counts, per-user tails for incremental updates, snapshots) carries it; only the pairs and
    the scoring differ. Defaults chosen on the MovieLens-100K validation stage (docs/results.md)."""

    name = "transition"

    def __init__(
        self,
        *,
        window: int = 10,
        recent: int = 10,
        decay: float = 0.8,
        step_decay: float = 0.8,
        backward: float = 0.3,
        seed_neighbours: int = 2000,
    ):
        super().__init__(window=window, recent=recent, decay=decay, seed_neighbours=seed_neighbours)
        self.step_decay = step_decay
        self.backward = backward

    def _count(
        self, users: np.ndarray, items: np.ndarray, later_new: np.ndarray | None
    ) -> tuple[sparse.csr_matrix, int]:
        return _step_counts(users, items, len(self.ids), self.window, self.step_decay, self.backward, later_new)

    def touched_scores(self, recent_items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows, weights = self._seeds(recent_items)
        if not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # score_j = sum_s w_s * counts[s, j] / out_s: each seed's row as a distribution of what follows it
        pulled = self._pulled(rows, weights / np.maximum(self.totals[rows], 1.0))
        positions = np.flatnonzero(pulled > 0)  # a mask: 4x faster than nonzero over the floats at 100k items
        return positions, pulled[positions].astype(np.float32)


class PopularityIndex:
    """Most interactions in a recent time window before ``now``: the cold-start source."""

    name = "popularity"

    def __init__(self, *, window_days: float = 30.0):
        self.window = timedelta(days=window_days)
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self._state = (np.zeros(0, np.float64), np.zeros(0, np.int64))  # (times sorted, items), swapped whole
        # per span of the time order: its counts and, once asked for, its positive items best first
        self._counted: tuple[tuple[np.ndarray, np.ndarray], dict[tuple[int, int], list[np.ndarray]]] = (self._state, {})

    @property
    def times(self) -> np.ndarray:
        return self._state[0]

    @property
    def items(self) -> np.ndarray:
        return self._state[1]

    def fit(self, interactions: Iterable[Interaction], catalog: Iterable[str]) -> PopularityIndex:
        ids = list(dict.fromkeys(catalog))
        log = EventColumns.from_interactions(interactions, {item: i for i, item in enumerate(ids)}, UserCodes())
        return self.fit_columns(log, ids)

    def fit_columns(self, log: EventColumns, catalog_ids: Sequence[str]) -> PopularityIndex:
        self.ids, self.position = catalog_order(catalog_ids)
        known = log.known()
        order = np.lexsort((known.seq, known.times))
        self._state = (known.times[order], known.items[order])
        return self

    def restore(self, catalog_ids: Sequence[str], times: np.ndarray, items: np.ndarray) -> PopularityIndex:
        """Take a saved state (retrieval/snapshot.py): event times, sorted, and their items."""
        self.ids, self.position = catalog_order(catalog_ids)
        self._state = (times, items)
        return self

    def update(self, new: EventColumns) -> None:
        """Take in new events, merged into the time order without sorting it again (a re-sort of every
        event cost ~1.2 ms per update at 100k events and grew with the log; the new ones are a handful): the
        same order as a stable sort of the kept events followed by the new ones."""
        known = new.known()
        if not len(known):
            return
        order = np.argsort(known.times, kind="stable")
        new_times, new_items = known.times[order], known.items[order]
        times, items = self._state
        if not len(times) or new_times[0] >= times[-1]:  # the usual case: none earlier than the latest kept
            self._state = (np.concatenate([times, new_times]), np.concatenate([items, new_items]))
            return
        at = np.searchsorted(times, new_times, side="right")  # after the kept events of the same time
        self._state = (np.insert(times, at, new_times), np.insert(items, at, new_items))

    def counts(self, now: datetime) -> np.ndarray:
        """Interactions per item in [now - window, now): nothing after ``now`` is ever counted. Read-only."""
        times, _ = self._state
        lo, hi = np.searchsorted(times, [(now - self.window).timestamp(), now.timestamp()], side="left")
        return self._between(int(lo), int(hi))

    def _between(self, lo: int, hi: int) -> np.ndarray:
        """Counts of the events at positions [lo, hi) of the time order, kept for the next request that
        covers the same events (most requests within a second or a quiet hour do)."""
        return self._span(lo, hi)[0]

    def _span(self, lo: int, hi: int) -> list[np.ndarray]:
        """The kept entry of a span: ``[counts]``, or ``[counts, ranked]`` once its order was asked for."""
        state = self._state
        known = self._counted
        if known[0] is not state:  # new events came in: every count may have moved
            known = self._counted = (state, {})
        found = known[1].get((lo, hi))
        if found is None:
            counts = np.bincount(state[1][lo:hi], minlength=len(self.ids)).astype(np.float32)
            counts.flags.writeable = False
            if len(known[1]) >= 8:
                known[1].clear()
            found = known[1][(lo, hi)] = [counts]
        return found

    def _ranked(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """A span's counts and its counted items best first (ties: catalog order), sorted once per span:
        integer counts tie a lot, and a partition over many equal values is the slow case of top_scored."""
        found = self._span(lo, hi)
        if len(found) == 1:
            counts = found[0]
            positive = np.flatnonzero(counts > 0)
            order = positive[np.argsort(-counts[positive], kind="stable")]
            order.flags.writeable = False
            found.append(order)
        return found[0], found[1]

    async def candidates(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        return await asyncio.to_thread(self.candidates_blocking, request, n, catalog)

    def candidates_blocking(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> Scored:
        if not self.ids:
            return []
        window = [(request.now - self.window).timestamp(), request.now.timestamp()]
        lo, hi = np.searchsorted(self.times, window, side="left")
        counts, ranked = self._ranked(int(lo), int(hi))
        if not len(ranked):  # a quiet window: fall back to all-time counts before now
            counts, ranked = self._ranked(0, int(hi))
        unseen = request.unseen(self.position, len(self.ids))
        return top_scored(self.ids, counts, n, request, catalog, ranked=ranked, unseen=unseen)


def top_scored(
    ids: list[str],
    scores: np.ndarray,
    n: int,
    request: RetrievalRequest,
    catalog: Mapping[str, Item],
    *,
    ranked: np.ndarray | None = None,
    unseen: np.ndarray | None = None,
) -> Scored:
    """The ``n`` best positive scores, skipping seen and filtered-out items (ties: catalog order).

    Only positive scores are ever kept, so only they are looked at: a sparse source (co-occurrence over a
    100k-item catalog) scores most items 0, and a partition over that many equal values costs ~10x one over
    distinct ones (9.5 vs 1.0 ms at 100k items). Without filters at most ``n + len(seen)`` items can be
    needed: only those scoring at least the ``n + len(seen) + 16``-th best score are sorted (a partition,
    then a small stable sort; every item tied at the threshold is kept, so ties still go by catalog order).
    ``ranked``: the positions of the positive scores in that order, when the caller keeps them sorted.
    ``unseen``: ``request.unseen`` over ``ids``' order, when the caller has it: seen items are then dropped
    before the partition, which needs only ``n + 16``."""
    if ranked is not None:
        positions = ranked if request.filters is not None else ranked[: n + len(request.seen) + 16]
        if unseen is not None:
            positions = positions[unseen[positions]]
        return _first_allowed(ids, positions.tolist(), scores[positions].tolist(), n, request, catalog)
    positive = np.flatnonzero(scores > 0)  # ascending: catalog order
    return top_touched(ids, positive, scores[positive], n, request, catalog, unseen=unseen)


def top_touched(
    ids: list[str],
    positions: np.ndarray,
    values: np.ndarray,
    n: int,
    request: RetrievalRequest,
    catalog: Mapping[str, Item],
    *,
    unseen: np.ndarray | None = None,
) -> Scored:
    """``top_scored`` over the scores of ``positions`` only (ascending: catalog order); every other item
    scores 0. Only positive scores are kept."""
    keep = values > 0
    if unseen is not None:
        keep &= unseen[positions]
    positions, values = positions[keep], values[keep]
    want = n + 16 if unseen is not None else n + len(request.seen) + 16
    if request.filters is None and want < len(values):
        threshold = np.partition(values, len(values) - want)[len(values) - want]
        head = np.flatnonzero(values >= threshold)
        positions, values = positions[head], values[head]
    order = np.argsort(-values, kind="stable")
    return _first_allowed(ids, positions[order].tolist(), values[order].tolist(), n, request, catalog)


def _first_allowed(
    ids: list[str],
    positions: list[int],
    scores: list[float],
    n: int,
    request: RetrievalRequest,
    catalog: Mapping[str, Item],
) -> Scored:
    """The first ``n`` of ``positions`` (best first, with their ``scores``) whose items are neither seen nor
    filtered out. Without filters the callers hand over at most what ``n`` can need (a hundred or so), most
    often with the seen items already masked out: the first ``n`` are then named, checked and paired in
    C-level passes (a third of a comprehension's cost), and a miss falls back to the comprehension; with
    filters the list can be every scored item, and the loop stops at the ``n``-th match."""
    seen, filters = request.seen, request.filters
    if filters is None:
        head = list(map(ids.__getitem__, positions[:n]))
        if seen.isdisjoint(head) and all(map(catalog.__contains__, head)):
            return list(zip(head, scores[:n], strict=True))
        named = zip(map(ids.__getitem__, positions), scores, strict=True)
        return [(item, score) for item, score in named if item not in seen and item in catalog][:n]
    out: Scored = []
    for pos, score in zip(positions, scores, strict=True):
        item = ids[pos]
        if item in seen or item not in catalog or not filters.matches(catalog[item]):
            continue
        out.append((item, score))
        if len(out) >= n:
            break
    return out
