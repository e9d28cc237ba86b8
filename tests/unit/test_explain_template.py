"""Template reasons are true by construction: a profile interest is called an interest, a theme of
recent sessions (the LLM summary's, not grounded in the profile) is not."""

from __future__ import annotations

from datetime import UTC, datetime

from driftrec.models import Interest, InterestProfile, Item, Provenance
from driftrec.ranking.explain import template_reason

T = datetime(2024, 1, 1, tzinfo=UTC)
STAND_BY_ME = Item(id="655", title="Stand by Me (1986)", genres=("Adventure", "Comedy", "Drama"))
PROFILE = InterestProfile(user="6", interests=[Interest(name="Comedy", weight=0.5, first_seen=T, last_seen=T)])


def test_an_interest_of_the_profile_is_named_as_one() -> None:
    assert template_reason(STAND_BY_ME, ["Comedy", "Drama"], (), PROFILE) == "Matches your interest in Comedy."


def test_a_session_theme_is_not_called_an_interest() -> None:
    assert template_reason(STAND_BY_ME, ["Drama"], (), PROFILE) == "Like your recent sessions (Drama)."


def test_without_a_match_the_source_that_found_it_is_the_reason() -> None:
    found = [Provenance(source="cooc", score=1.0, rank=2)]
    reason = template_reason(STAND_BY_ME, [], found, PROFILE)
    assert reason == "Often watched together with movies you watched recently."
