"""A synthetic event log at any size, with users whose true interests drift at known times.

For scale benchmarks (how ingest, index fits and recommend() grow from 1x to 100x MovieLens) and for
checking that profiles follow drift against ground truth. Each item belongs to one of ``genres`` genres
and is popular within it by a Zipf law; each user has a first genre and, for ``drift_share`` of users, a
second genre they switch to at a known time. An event picks the user (activity is Zipf too), a time, the
genre the user is in at that time (``noise`` of the time any genre), then an item of that genre.
Generated in chunks with numpy; the same seed gives the same log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from driftrec.models import Action, Interaction, Item

GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
START = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SyntheticSpec:
    items: int = 1_682
    users: int = 943
    events: int = 100_000
    drift_share: float = 0.5
    noise: float = 0.1
    days: float = 365.0
    zipf: float = 1.1
    seed: int = 0

    @classmethod
    def scaled(cls, factor: float, **kwargs: object) -> SyntheticSpec:
        """MovieLens-100K's shape times ``factor`` (items grow more slowly: 100x = 100k items, 1M users)."""
        base = cls()
        return cls(
            items=int(base.items * min(factor, 100) ** 0.89),  # 1x: 1,682; 10x: ~13k; 100x: ~100k
            users=int(base.users * factor * 10.6) if factor >= 100 else int(base.users * factor),
            events=int(base.events * factor),
            **kwargs,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Truth:
    """Each user's true interests: ``first`` genre, the ``second`` (-1: no drift) and when they switch."""

    first: np.ndarray
    second: np.ndarray
    switch_at: np.ndarray  # epoch seconds (inf: never)

    def genre_at(self, user: int, when: float) -> int:
        return int(self.second[user] if when >= self.switch_at[user] else self.first[user])


class SyntheticLog:
    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        n_genres = len(GENRES)
        self.item_genre = rng.integers(0, n_genres, spec.items)
        # items of each genre, most popular first, with Zipf weights
        self.by_genre = [np.flatnonzero(self.item_genre == g) for g in range(n_genres)]
        self.weights = [_zipf(len(ids), spec.zipf) for ids in self.by_genre]
        first = rng.integers(0, n_genres, spec.users)
        drifts = rng.random(spec.users) < spec.drift_share
        second = np.where(drifts, (first + rng.integers(1, n_genres, spec.users)) % n_genres, -1)
        t0, span = START.timestamp(), spec.days * 86400
        switch = np.where(drifts, t0 + span * rng.uniform(0.3, 0.7, spec.users), np.inf)
        self.truth = Truth(first, second, switch)
        self.activity = _zipf(spec.users, 0.8)  # how often each user acts
        rng.shuffle(self.activity)

    def catalog(self) -> list[Item]:
        return [
            Item(id=f"s{i}", title=f"Synthetic title {i}", genres=(GENRES[g],), year=1950 + i % 75)
            for i, g in enumerate(self.item_genre)
        ]

    def chunks(self, size: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(user index, item index, epoch seconds) arrays, ``size`` events at a time, ``events`` in all."""
        spec = self.spec
        rng = np.random.default_rng(spec.seed + 1)
        t0, span = START.timestamp(), spec.days * 86400
        left = spec.events
        while left > 0:
            n = min(size, left)
            left -= n
            users = rng.choice(spec.users, n, p=self.activity)
            times = t0 + span * rng.random(n)
            genre = np.where(times >= self.truth.switch_at[users], self.truth.second[users], self.truth.first[users])
            noisy = rng.random(n) < spec.noise
            genre = np.where(noisy, rng.integers(0, len(GENRES), n), genre)
            items = np.empty(n, np.int64)
            for g in np.unique(genre):
                at = np.flatnonzero(genre == g)
                items[at] = rng.choice(self.by_genre[g], len(at), p=self.weights[g])
            yield users, items, times

    def interactions(
        self, users: np.ndarray, items: np.ndarray, times: np.ndarray, first_id: int = 0
    ) -> list[Interaction]:
        """One chunk as validated events (what the API ingests); ids count from ``first_id``."""
        return [
            Interaction(
                user=f"u{u}",
                item=f"s{i}",
                action=Action.CLICK,
                timestamp=START + timedelta(seconds=float(t) - START.timestamp()),
                event_id=f"e{n}",
            )
            for n, (u, i, t) in enumerate(
                zip(users.tolist(), items.tolist(), times.tolist(), strict=True), start=first_id
            )
        ]


def _zipf(n: int, exponent: float) -> np.ndarray:
    if n == 0:
        return np.zeros(0)
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()
