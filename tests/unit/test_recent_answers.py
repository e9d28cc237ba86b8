"""Each user's latest answer: reused only for the same request while fresh and not degraded; bounded."""

from __future__ import annotations

import pytest

from driftrec.agent.answers import RecentAnswers
from driftrec.models import RecommendationList


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
    answers.remember("ann", ("k", 10), given)
    clock.now = 59.0
    assert answers.reusable("ann", ("k", 10)) is given
    assert answers.reusable("ann", ("k", 5)) is None  # another request
    assert answers.reusable("bob", ("k", 10)) is None  # another user
    clock.now = 60.5
    assert answers.reusable("ann", ("k", 10)) is None  # too old
    assert answers.last("ann") is given  # still the latest answer for "why did you recommend X?"
    assert (answers.hits, answers.misses) == (1, 3)


def test_a_degraded_answer_is_the_latest_but_never_reused() -> None:
    answers = RecentAnswers(ttl_s=60, max_users=10, clock=Clock())
    failed = answer("ann", degraded=True)
    answers.remember("ann", "key", failed)
    assert answers.reusable("ann", "key") is None
    assert answers.last("ann") is failed


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
