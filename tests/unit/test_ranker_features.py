"""The learned ranker's features never look past ``now``: popularity, ratings and first appearances count
only earlier events; a candidate's source scores and ranks come from its provenance."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from driftrec.models import Candidate, Interaction, Item, Provenance
from driftrec.ranking.features import DAY, FEATURES, FeatureBuilder

CATALOG = {
    "a": Item(id="a", title="Alpha", year=1990, genres=("Comedy",)),
    "b": Item(id="b", title="Beta", year=1995, genres=("Drama",)),
    "c": Item(id="c", title="Gamma", year=1999, genres=("Comedy", "Drama")),
}


def at(day: float) -> datetime:
    return datetime.fromtimestamp(day * DAY, UTC)


EVENTS = [
    Interaction(user="u1", item="a", rating=5, timestamp=at(10)),
    Interaction(user="u2", item="a", rating=4, timestamp=at(20)),
    Interaction(user="u2", item="b", rating=1, timestamp=at(30)),
    Interaction(user="u3", item="c", rating=5, timestamp=at(40)),
    Interaction(user="u3", item="a", rating=2, timestamp=at(50)),
]


def column(rows, name: str) -> list[float]:
    return [float(v) for v in rows[:, FEATURES.index(name)]]


def test_nothing_after_now_is_counted() -> None:
    builder = FeatureBuilder().fit(EVENTS, CATALOG)
    candidates = [Candidate(item=CATALOG[i], score=1.0) for i in "abc"]
    early = builder.features([], 25 * DAY, candidates)
    assert column(early, "pop_all") == pytest.approx([math.log1p(2), 0.0, 0.0])  # a twice before day 25; b, c later
    assert math.isnan(column(early, "days_since_first")[1])  # b first appears on day 30: unknown yet
    assert column(early, "days_since_first")[0] == 15.0
    late = builder.features([], 60 * DAY, candidates)
    assert column(late, "pop_all") == pytest.approx([math.log1p(3), math.log1p(1), math.log1p(1)])
    assert column(late, "pop_30d") == pytest.approx([math.log1p(1)] * 3)  # [day 30, day 60): a 50, b 30, c 40
    shrunk = (5 + 4 + 2 + 3.5 * 5) / (3 + 5)
    assert math.isclose(column(late, "mean_rating")[0], shrunk, rel_tol=1e-6)


def test_source_features_come_from_provenance_and_taste_from_the_history() -> None:
    builder = FeatureBuilder().fit(EVENTS, CATALOG)
    candidates = [
        Candidate(item=CATALOG["c"], score=0.5, provenance=[Provenance(source="cooc", score=3.0, rank=2)]),
        Candidate(item=CATALOG["b"], score=0.2, provenance=[]),
    ]
    history = [Interaction(user="u9", item="a", rating=5, timestamp=at(5))]
    rows = builder.features(history, 60 * DAY, candidates)
    assert column(rows, "cooc_score")[0] == 3.0 and column(rows, "cooc_rrank")[0] == 0.5
    assert math.isnan(column(rows, "cooc_score")[1]) and column(rows, "cooc_rrank")[1] == 0.0
    assert column(rows, "sources") == [1.0, 0.0]
    comedy_fan = column(rows, "genre_match_long")
    assert comedy_fan[0] > 0 and comedy_fan[1] == 0.0  # c has Comedy, b has none
    assert column(rows, "days_since_last") == [55.0, 55.0]
