"""Per-candidate features for the learned ranking stage: what each source said, how popular the item is
over several windows, how old it is, how active the user is, how its genres match the user's history.

Fitted on an interaction log (production: the event store; evaluation: the stage's training log), and
never looking past ``now``: popularity, ratings and first appearances count only events before it.
The names and their order are the ranker file's contract (``FEATURES``): a model trained on another
list is refused at load.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from driftrec.models import Candidate, Interaction, Item
from driftrec.retrieval.candidates import SOURCES as RETRIEVAL_SOURCES
from driftrec.retrieval.sources import RetrievalRequest, Scored, top_scored

MODEL_SOURCES = ("als", "knn")  # candidate sources the feature builder's models add to the ranker's pool
SOURCES = (*RETRIEVAL_SOURCES, *MODEL_SOURCES)
POPULARITY_DAYS = (7, 30, 180)
RECENT_ITEMS = 10
DAY = 86400.0

FEATURES: tuple[str, ...] = (
    *(f"{s}_{kind}" for s in RETRIEVAL_SOURCES for kind in ("score", "rrank")),
    *(f"{s}_rrank" for s in MODEL_SOURCES),  # their scores are features of every candidate (below)
    "sources",  # how many sources proposed it (retrieval's and the models')
    "fused_score",
    "fused_rrank",
    "pop_all",
    *(f"pop_{d}d" for d in POPULARITY_DAYS),
    "mean_rating",
    "ratings",
    "item_age_years",
    "days_since_first",
    "user_events",
    "days_since_last",
    "genre_match_long",
    "genre_match_recent",
    "als_score",  # matrix factorization (implicit ALS), the user's factors solved from their history
    "knn_long",  # mean item-item cosine to everything the user consumed
    "knn_recent",  # ... to their last ``RECENT_ITEMS``
)
ALS_FACTORS = 64


def _weight(event: Interaction) -> float:
    """How much an event says the user likes the item (ratings centred on 3 of 5; likes +1, dislikes -1)."""
    if event.rating is not None:
        return (event.rating - 3.0) / 2.0
    return {"like": 1.0, "purchase": 1.0, "dislike": -1.0, "skip": -0.5}.get(str(event.action.value), 0.3)


class FeatureBuilder:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.times = np.zeros(0, np.float64)
        self.items = np.zeros(0, np.int64)
        self.ratings = np.zeros(0, np.float64)
        self.rated = np.zeros(0, np.float64)
        self.first = np.zeros(0, np.float64)
        self.genres = np.zeros((0, 0), np.float32)
        self.years = np.zeros(0, np.float64)
        self._last_factors: tuple[bytes, np.ndarray] | None = None  # a request asks twice: pool, then features

    def fit(self, interactions: Iterable[Interaction], catalog: Mapping[str, Item]) -> FeatureBuilder:
        """Blocking (about 3 s for MovieLens-100K on 2 cores): run it in a thread."""
        events = list(interactions)
        self.ids = list(catalog)
        self.position = {item: n for n, item in enumerate(self.ids)}
        rows = sorted(
            (e.timestamp.timestamp(), self.position[e.item], e.rating) for e in events if e.item in self.position
        )
        self.times = np.array([t for t, _, _ in rows], np.float64)
        self.items = np.array([i for _, i, _ in rows], np.int64)
        self.ratings = np.array([r if r is not None else 0.0 for _, _, r in rows], np.float64)
        self.rated = np.array([1.0 if r is not None else 0.0 for _, _, r in rows], np.float64)
        self.first = np.full(len(self.ids), np.inf)
        np.minimum.at(self.first, self.items, self.times)
        names = sorted({g for item in catalog.values() for g in item.genres})
        column = {g: n for n, g in enumerate(names)}
        self.genres = np.zeros((len(self.ids), len(names)), np.float32)
        for n, item in enumerate(catalog.values()):
            for g in item.genres:
                self.genres[n, column[g]] = 1.0
        norms = np.linalg.norm(self.genres, axis=1, keepdims=True)
        self.genres /= np.where(norms > 0, norms, 1.0)
        self.years = np.array([item.year or np.nan for item in catalog.values()], np.float64)
        self._fit_collaborative(events)
        return self

    def _fit_collaborative(self, events: Sequence[Interaction]) -> None:
        """Implicit ALS and an item-item cosine matrix on who consumed what (binary)."""
        from implicit.als import AlternatingLeastSquares
        from scipy import sparse
        from threadpoolctl import threadpool_limits

        users = {u: n for n, u in enumerate(dict.fromkeys(e.user for e in events))}
        pairs = {(users[e.user], self.position[e.item]) for e in events if e.item in self.position}
        rows, cols = (
            (np.array(v, np.int64) for v in zip(*pairs, strict=True)) if pairs else (np.zeros(0, np.int64),) * 2
        )
        matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(self.ids)))
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="OpenBLAS is configured", category=RuntimeWarning)
            self.als = AlternatingLeastSquares(factors=ALS_FACTORS, iterations=15, regularization=0.05, random_state=7)
            self.als.fit(matrix, show_progress=False)
        self._last_factors = None
        columns = matrix.tocsc().astype(np.float32)
        norms = np.sqrt(np.asarray(columns.multiply(columns).sum(axis=0))).ravel()
        normalized = columns @ sparse.diags(1.0 / np.where(norms > 0, norms, 1.0))
        self.similarity = np.asarray((normalized.T @ normalized).todense(), np.float32)
        np.fill_diagonal(self.similarity, 0.0)

    def _user_factors(self, consumed: np.ndarray) -> np.ndarray:
        from scipy import sparse

        if len(consumed) == 0:
            return np.zeros(ALS_FACTORS, np.float32)
        key = consumed.tobytes()
        last = self._last_factors  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == key:
            return last[1]
        row = sparse.csr_matrix(
            (np.ones(len(consumed), np.float32), (np.zeros(len(consumed), np.int64), consumed)),
            shape=(1, len(self.ids)),
        )
        factors = np.asarray(self.als.recalculate_user(0, row), np.float32).ravel()
        self._last_factors = (key, factors)
        return factors

    def source_lists(self, request: RetrievalRequest, n: int, catalog: Mapping[str, Item]) -> dict[str, Scored]:
        """ALS and item-KNN as candidate sources for the ranker's pool: each one's top ``n`` for this user,
        never a consumed or filtered-out item (the same rules as retrieval's sources). Blocking."""
        consumed = np.unique(
            np.array([self.position[e.item] for e in request.history if e.item in self.position], np.int64)
        )
        if not len(consumed) or not self.ids:
            return {s: [] for s in MODEL_SOURCES}
        als = np.asarray(self.als.item_factors, np.float32) @ self._user_factors(consumed)
        knn = self.similarity[:, consumed].sum(axis=1)
        # top_scored keeps positive scores only: shift ALS (a dot product, any sign) above zero
        als = als - als.min() + 1e-6
        return {
            "als": top_scored(self.ids, als, n, request, catalog),
            "knn": top_scored(self.ids, knn, n, request, catalog),
        }

    def _taste(self, events: Sequence[Interaction]) -> np.ndarray:
        vector = np.zeros(self.genres.shape[1], np.float32)
        for event in events:
            n = self.position.get(event.item)
            if n is not None:
                vector += _weight(event) * self.genres[n]
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def features(self, history: Sequence[Interaction], now_ts: float, candidates: Sequence[Candidate]) -> np.ndarray:
        """One row per candidate, columns as ``FEATURES`` (missing values are NaN; LightGBM handles them)."""
        rows = np.full((len(candidates), len(FEATURES)), np.nan, np.float32)
        if not candidates:
            return rows
        index = np.array([self.position.get(c.item.id, -1) for c in candidates])
        known = index >= 0
        hi = int(np.searchsorted(self.times, now_ts, side="left"))
        size = len(self.ids)
        counts = np.bincount(self.items[:hi], minlength=size).astype(np.float64)
        windows = []
        for days in POPULARITY_DAYS:
            lo = int(np.searchsorted(self.times, now_ts - days * DAY, side="left"))
            windows.append(np.bincount(self.items[lo:hi], minlength=size).astype(np.float64))
        rating_sum = np.bincount(self.items[:hi], weights=self.ratings[:hi], minlength=size)
        rating_n = np.bincount(self.items[:hi], weights=self.rated[:hi], minlength=size)
        long_taste = self._taste(history)
        recent_taste = self._taste(history[-RECENT_ITEMS:])
        last = history[-1].timestamp.timestamp() if history else np.nan
        year_now = 1970 + now_ts / (365.25 * DAY)
        col = {name: n for n, name in enumerate(FEATURES)}
        for r, candidate in enumerate(candidates):
            by_source = {p.source: p for p in candidate.provenance}
            for source in SOURCES:
                hit = by_source.get(source)
                if source in RETRIEVAL_SOURCES:
                    rows[r, col[f"{source}_score"]] = hit.score if hit else np.nan
                rows[r, col[f"{source}_rrank"]] = 1.0 / hit.rank if hit else 0.0
            rows[r, col["sources"]] = sum(s in by_source for s in SOURCES)
            rows[r, col["fused_score"]] = candidate.score
            rows[r, col["fused_rrank"]] = 1.0 / (r + 1)
        ix = index[known]
        rows[known, col["pop_all"]] = np.log1p(counts[ix])
        for days, window in zip(POPULARITY_DAYS, windows, strict=True):
            rows[known, col[f"pop_{days}d"]] = np.log1p(window[ix])
        with np.errstate(invalid="ignore", divide="ignore"):
            rows[known, col["mean_rating"]] = (rating_sum[ix] + 3.5 * 5) / (rating_n[ix] + 5)  # shrunk to 3.5
        rows[known, col["ratings"]] = np.log1p(rating_n[ix])
        rows[known, col["item_age_years"]] = year_now - self.years[ix]
        first = self.first[ix]
        rows[known, col["days_since_first"]] = np.where(first < now_ts, (now_ts - first) / DAY, np.nan)
        rows[:, col["user_events"]] = np.log1p(len(history))
        rows[:, col["days_since_last"]] = (now_ts - last) / DAY if history else np.nan
        rows[known, col["genre_match_long"]] = self.genres[ix] @ long_taste
        rows[known, col["genre_match_recent"]] = self.genres[ix] @ recent_taste
        consumed = np.array([self.position[e.item] for e in history if e.item in self.position], np.int64)
        recent = np.array([self.position[e.item] for e in history[-RECENT_ITEMS:] if e.item in self.position], np.int64)
        factors = self._user_factors(np.unique(consumed))
        rows[known, col["als_score"]] = np.asarray(self.als.item_factors, np.float32)[ix] @ factors
        if len(consumed):
            rows[known, col["knn_long"]] = self.similarity[np.ix_(ix, consumed)].mean(axis=1)
        if len(recent):
            rows[known, col["knn_recent"]] = self.similarity[np.ix_(ix, recent)].mean(axis=1)
        return rows
