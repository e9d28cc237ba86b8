"""Each user's latest answer: reused only for the same request while fresh and not degraded; bounded."""

from __future__ import annotations

import gc

import pytest

from driftrec.agent.answers import RecentAnswers, answer_body, answer_json
from driftrec.models import Item, Provenance, Recommendation, RecommendationList


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer(user: str, degraded: bool = False) -> RecommendationList:
    return RecommendationList(user=user, items=[], degraded=degraded)


def test_the_same_request_reuses_the_answer_until_it_expires() -> None:
    clock = Clock()
    answers = RecentAnswers(ttl_s=60, max_users=10, clock=clock)
    given = answer("ann")
    assert answers.remember("ann", ("k", 10), given) == answer_body(given)  # what is kept
    clock.now = 59.0
    assert answers.reusable("ann", ("k", 10)) == answer_body(given)
    assert answers.reusable("ann", ("k", 5)) is None  # another request
    assert answers.reusable("bob", ("k", 10)) is None  # another user
    clock.now = 60.5
    assert answers.reusable("ann", ("k", 10)) is None  # too old
    assert answers.last("ann") == given  # still the latest answer for "why did you recommend X?"
    assert (answers.hits, answers.misses) == (1, 3)


def test_a_degraded_answer_is_the_latest_but_never_reused() -> None:
    answers = RecentAnswers(ttl_s=60, max_users=10, clock=Clock())
    failed = answer("ann", degraded=True)
    answers.remember("ann", "key", failed)
    assert answers.reusable("ann", "key") is None
    assert answers.last("ann") == failed


def test_ttl_zero_never_reuses_but_keeps_the_latest() -> None:
    answers = RecentAnswers(ttl_s=0, max_users=10, clock=Clock())
    answers.remember("ann", "key", answer("ann"))
    assert answers.reusable("ann", "key") is None
    assert answers.last("ann") is not None


def test_at_most_max_users_are_kept_least_recently_asked_first_out() -> None:
    answers = RecentAnswers(ttl_s=60, max_users=2, clock=Clock())
    answers.remember("ann", "key", answer("ann"))
    answers.remember("bob", "key", answer("bob"))
    assert answers.reusable("ann", "key") is not None  # ann asked again: bob is now the oldest
    answers.remember("cyd", "key", answer("cyd"))
    assert len(answers) == 2 and answers.last("bob") is None and answers.last("ann") is not None


def test_forgetting_one_user_or_everyone() -> None:
    answers = RecentAnswers(ttl_s=60, max_users=10, clock=Clock())
    for user in ("ann", "bob"):
        answers.remember(user, "key", answer(user))
    answers.forget("ann")
    assert answers.last("ann") is None and answers.last("bob") is not None
    answers.forget()
    assert len(answers) == 0


def test_at_least_one_user_is_kept() -> None:
    with pytest.raises(ValueError, match="max_users"):
        RecentAnswers(ttl_s=60, max_users=0)


def test_kept_answers_give_the_garbage_collector_almost_nothing_to_walk() -> None:
    """10,000 kept answers of ~100 objects each made every older-generation collection walk a million
    objects (~200 ms pauses at 1M users); kept as text, an answer adds a couple of tracked objects."""
    answers = RecentAnswers(ttl_s=60, max_users=2_000)

    def ten(user: str) -> RecommendationList:
        return RecommendationList(
            user=user,
            items=[
                Recommendation(
                    item=Item(id=str(n), title=f"Film {n}", genres=["Drama"], year=1990),
                    rank=n + 1,
                    score=1.0 / (n + 1),
                    reason="because",
                    provenance=[Provenance(source="cooc", score=0.5, rank=n + 1)],
                )
                for n in range(10)
            ],
        )

    gc.collect()
    before = len(gc.get_objects())
    computed = [ten(f"u{n}") for n in range(1_000)]
    for n, answer in enumerate(computed):
        answers.remember(f"u{n}", ("k", n), answer)
    del answer, computed  # the request is over: only what the cache keeps is left
    gc.collect()
    assert len(gc.get_objects()) - before < 3 * 1_000  # the entry and its key; the answer is one string
    assert answers.last("u7") == ten("u7")  # parsed back equal


def test_a_kept_body_with_its_timing_is_the_answer_as_the_model_writes_it() -> None:
    """The HTTP service sends a kept answer's text with the timing appended, never building the answer:
    it must be byte for byte what ``model_dump_json`` writes, whatever the answer holds."""
    item = Item(id="1", title='Say "Anything" (1989) \u00e9\u2603', genres=["Comedy", "Drama"], year=1989)
    full = RecommendationList(
        user="ann",
        items=[
            Recommendation(
                item=item,
                rank=1,
                score=-0.25,
                reason=None,
                matched_interests=["Comedy"],
                provenance=[Provenance(source="cooc", score=1e-9, rank=3)],
                extra={"retrieval_rank": 1, "why": ["a", None]},
            )
        ],
        degraded=True,
        ranking="verbalizer",
        prompt="rank@3",
        candidates=50,
        error="LLMTimeout: x",
    )
    for given in (answer("ann"), full):
        for seconds in (0.0, 0.001, 0.1, 1.234, 12.0, 3600.5):
            for cached in (False, True):
                timed = given.model_copy(update={"seconds": seconds, "cached": cached})
                assert answer_json(answer_body(timed), seconds, cached) == timed.model_dump_json()
