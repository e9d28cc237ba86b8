"""The serving hot paths take shortcuts (no re-validation, only the history's tail, lists instead of numpy
scalars); each must give exactly what the plain definition gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import BaseModel, Field, ValidationError

from driftrec.memory.events import events_from_rows, history_from_rows
from driftrec.memory.sessions import open_session, sessionize
from driftrec.models import (
    Action,
    Candidate,
    Filters,
    Interaction,
    Item,
    Provenance,
    Recommendation,
    item_ids,
    trusted,
)
from driftrec.ranking import Reranker, build_context
from driftrec.retrieval.sources import RetrievalRequest, top_scored, top_touched

START = datetime(2024, 1, 1, tzinfo=UTC)


def test_a_trusted_event_is_the_validated_event() -> None:
    values = {
        "user": "ada",
        "item": "42",
        "action": Action.RATE,
        "timestamp": START,
        "rating": 4.0,
        "text": None,
        "session_id": "s1",
        "event_id": "e1",
    }
    built, validated = trusted(Interaction, dict(values)), Interaction.model_validate(values)
    assert built == validated
    assert built.model_dump() == validated.model_dump()
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_fields_set == validated.model_fields_set
    with pytest.raises(ValidationError):  # still frozen
        built.item = "43"


def test_trusted_candidates_serialize_like_validated_ones() -> None:
    item = Item(id="1", title="Toy Story (1995)", genres=["Animation"], year=1995)
    provenance = [trusted(Provenance, {"source": "cooc", "score": 0.5, "rank": 1})]
    built = trusted(Candidate, {"item": item, "score": 0.25, "provenance": provenance})
    validated = Candidate(item=item, score=0.25, provenance=[Provenance(source="cooc", score=0.5, rank=1)])
    assert built == validated and built.model_dump_json() == validated.model_dump_json()


async def test_ranked_recommendations_are_the_validated_ones() -> None:
    """The ranker builds its recommendations without validating them again: each equals (and serializes
    like) the recommendation validated from its own values."""
    items = [Item(id=str(i), title=f"Film {i}", genres=["Drama" if i % 2 else "Comedy"]) for i in range(1, 9)]
    candidates = [
        trusted(Candidate, {"item": it, "score": 1.0 / n, "provenance": [Provenance(source="cooc", score=0.5, rank=n)]})
        for n, it in enumerate(items, start=1)
    ]
    history = [Interaction(user="u", item="1", timestamp=START)]
    context = build_context("u", candidates, 4, history=history, catalog={i.id: i for i in items})
    result = await Reranker(None).rank(context)
    assert [r.item.id for r in result.recommendations] == ["2", "3", "4", "5"]  # fusion order, the seen one out
    for built in result.recommendations:
        validated = Recommendation.model_validate(built.model_dump())
        assert built == validated and built.model_dump_json() == validated.model_dump_json()


def test_a_model_with_aliases_is_never_built_without_validation() -> None:
    class Aliased(BaseModel):
        name: str = Field(alias="n")

    with pytest.raises(TypeError, match="cannot be built without validation"):
        trusted(Aliased, {"name": "x"})


def _history(rng: random.Random, n: int) -> list[Interaction]:
    at, events = START, []
    for i in range(n):
        at += timedelta(minutes=rng.choice([1, 5, 20, 29, 31, 90, 600]))
        session = rng.choice([None, None, None, "a", "b"])
        events.append(Interaction(user="u", item=str(i), timestamp=at, session_id=session))
    return events


@pytest.mark.parametrize("seed", range(40))
def test_the_open_session_from_the_tail_is_the_open_session_of_the_whole_history(seed: int) -> None:
    rng = random.Random(seed)
    events, gap = _history(rng, rng.randint(0, 60)), timedelta(minutes=30)
    for after in (timedelta(0), timedelta(minutes=10), timedelta(minutes=31)):
        now = (events[-1].timestamp if events else START) + after
        whole = sessionize(events, gap, now=now)
        expected = whole[-1] if whole and not whole[-1].closed else None
        assert open_session(events, gap, now) == expected


@pytest.mark.parametrize("seed", range(10))
def test_a_history_built_as_read_is_the_history_built_whole(seed: int) -> None:
    """``History`` builds an event when it is first read: every way of reading it gives what the list of
    all events gives, each event is built once, and the consumers that need only items build none."""
    rng = random.Random(seed)
    rows = [
        (f"e{i}", "u", str(rng.randint(1, 30)), rng.choice(["view", "like", "rate"]), 1.7e9 + 60 * i, None, None, None)
        for i in range(rng.randint(0, 40))
    ]
    whole = events_from_rows(rows)
    history = history_from_rows(rows)
    assert history.items == [e.item for e in whole] == item_ids(whole) == item_ids(history)
    assert frozenset(item_ids(history)) == frozenset(e.item for e in whole)
    assert not any(history._built)  # items alone: no event built
    assert len(history) == len(whole)
    for index in range(-len(whole), len(whole)):
        assert history[index] == whole[index]
    for cut in (slice(None), slice(-5, None), slice(2, 7), slice(None, None, -1), slice(50, 60)):
        assert history[cut] == whole[cut]
    assert list(history) == whole and list(reversed(history)) == whole[::-1]
    assert all(a is b for a, b in zip(history, history, strict=True))  # built once, then kept
    for beyond in (len(whole), -len(whole) - 1):
        with pytest.raises(IndexError):
            history[beyond]
    if whole:
        now = whole[-1].timestamp + timedelta(minutes=5)
        assert open_session(history, timedelta(minutes=30), now) == open_session(whole, timedelta(minutes=30), now)
        request = RetrievalRequest(user="u", history=history_from_rows(rows), now=now)
        assert request.seen == frozenset(e.item for e in whole)


def _naive_top(ids, scores, n, request, catalog):
    """The definition: best scores first (ties: catalog order), positive, unseen, allowed, at most n."""
    out = []
    for pos in np.argsort(-scores, kind="stable"):
        item = ids[pos]
        allowed = item in catalog and (request.filters is None or request.filters.matches(catalog[item]))
        if scores[pos] > 0 and item not in request.seen and allowed:
            out.append((item, float(scores[pos])))
    return out[:n]


@pytest.mark.parametrize("seed", range(30))
def test_top_n_is_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(5, 400))
    ids = [str(i) for i in range(size)]
    catalog = {
        i: Item(id=i, title=f"t{i}", genres=[["Comedy"], ["Drama"]][int(i) % 2], year=1990 + int(i) % 20)
        for i in ids
        if rng.random() > 0.05
    }
    scores = rng.integers(-2, 6, size).astype(np.float32) * rng.choice([1.0, 0.5], size).astype(np.float32)
    seen = [Interaction(user="u", item=i, timestamp=START) for i in rng.choice(ids, int(rng.integers(0, size)))]
    filters = [None, Filters(genres=["Comedy"]), Filters(year_min=2000)][seed % 3]
    request = RetrievalRequest(user="u", history=seen, now=START, filters=filters)
    n = int(rng.integers(1, 50))
    expected = _naive_top(ids, scores, n, request, catalog)
    assert top_scored(ids, scores, n, request, catalog) == expected
    # a source that keeps its positive items sorted (popularity, once per time span) gets the same answer
    positive = np.flatnonzero(scores > 0)
    ranked = positive[np.argsort(-scores[positive], kind="stable")]
    assert top_scored(ids, scores, n, request, catalog, ranked=ranked) == expected
    # so does a source that scores only the items its seeds reach (co-occurrence, transitions)
    touched = np.flatnonzero(scores != 0)
    assert top_touched(ids, touched, scores[touched], n, request, catalog) == expected
    # and every one of them again with the request's mask of seen items, which drops them before the sort
    unseen = request.unseen({item: pos for pos, item in enumerate(ids)}, size)
    assert top_scored(ids, scores, n, request, catalog, unseen=unseen) == expected
    assert top_scored(ids, scores, n, request, catalog, ranked=ranked, unseen=unseen) == expected
    assert top_touched(ids, touched, scores[touched], n, request, catalog, unseen=unseen) == expected


def test_a_sparse_score_vector_over_a_large_catalog_is_the_definition() -> None:
    """Most of a co-occurrence row over 100k items is 0: only the positive scores are partitioned."""
    rng = np.random.default_rng(7)
    size = 100_000
    ids = [str(i) for i in range(size)]
    catalog = {i: Item(id=i, title=f"t{i}", genres=["Drama"], year=1990) for i in ids[:50_000]}
    scores = np.zeros(size, np.float32)
    scores[rng.choice(size, 3_000, replace=False)] = rng.integers(1, 4, 3_000)  # many ties
    seen = [Interaction(user="u", item=str(i), timestamp=START) for i in rng.choice(size, 40)]
    request = RetrievalRequest(user="u", history=seen, now=START)
    assert top_scored(ids, scores, 200, request, catalog) == _naive_top(ids, scores, 200, request, catalog)
