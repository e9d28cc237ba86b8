"""A user's own profile edits hold through later updates until their own events after the edit say otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from driftrec.memory.edits import EDIT_WEIGHT, standing, uphold
from driftrec.models import Action, Interaction, Interest, InterestProfile, Item, ProfileEdit

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CATALOG = {
    "c1": Item(id="c1", title="Airplane!", genres=("Comedy",)),
    "c2": Item(id="c2", title="Groundhog Day", genres=("Comedy", "Romance")),
    "d1": Item(id="d1", title="Fargo", genres=("Drama", "Crime")),
    "d2": Item(id="d2", title="Ran", genres=("Drama", "War")),
    "h1": Item(id="h1", title="Scream", genres=("Horror",)),
    "h2": Item(id="h2", title="Alien", genres=("Horror", "Sci-Fi")),
}


def interest(name: str, weight: float) -> Interest:
    return Interest(name=name, weight=weight, first_seen=T0, last_seen=T0)


def rated(item: str, rating: float, hours: int) -> Interaction:
    return Interaction(user="u", item=item, action=Action.RATE, rating=rating, timestamp=T0 + timedelta(hours=hours))


PROFILE = InterestProfile(user="u", version=3, interests=[interest("Drama", 0.8), interest("Comedy", 0.1)])


def edit(name: str, kind: str = "interest", action: str = "add", hours: int = 1) -> ProfileEdit:
    return ProfileEdit(name=name, kind=kind, action=action, created_at=T0 + timedelta(hours=hours))  # type: ignore[arg-type]


def test_a_removed_interest_stays_out_though_the_llm_proposes_it_again() -> None:
    held = uphold(PROFILE, [edit("Drama", action="remove")], [rated("d1", 5, 0)], CATALOG, T0)
    assert [i.name for i in held.interests] == ["Comedy"] and held.edits == ["removed interest Drama"]


def test_liking_it_again_after_the_edit_overturns_the_removal() -> None:
    after = [rated("d1", 5, 2), rated("d2", 4, 3)]
    held = uphold(PROFILE, [edit("Drama", action="remove")], after, CATALOG, T0)
    assert "Drama" in [i.name for i in held.interests] and held.edits == []
    assert standing([edit("Drama", action="remove")], after, CATALOG) == ([], [])
    assert standing([edit("Drama", action="remove")], after[:1], CATALOG) == ([], ["Drama"])  # one is not enough


def test_an_added_interest_gets_a_floor_weight_and_survives_decay() -> None:
    held = uphold(PROFILE, [edit("Comedy"), edit("Romance")], [], CATALOG, T0)
    weights = {i.name: (i.weight, i.source) for i in held.interests}
    assert weights["Comedy"] == (EDIT_WEIGHT, "edit") and weights["Romance"] == (EDIT_WEIGHT, "edit")
    assert weights["Drama"] == (0.8, "llm")


def test_an_added_dislike_is_excluded_until_the_user_likes_that_genre_again() -> None:
    dislike = edit("Horror", kind="dislike")
    held = uphold(PROFILE, [dislike], [], CATALOG, T0)
    assert [d.name for d in held.dislikes] == ["Horror"]
    assert standing([dislike], [], CATALOG) == (["Horror"], [])
    liked = [rated("h1", 5, 2), rated("h2", 5, 3)]
    assert uphold(PROFILE, [dislike], liked, CATALOG, T0).dislikes == []
    assert standing([dislike], liked, CATALOG) == ([], [])


def test_disliking_what_was_an_interest_moves_it_and_the_latest_edit_is_what_counts() -> None:
    held = uphold(PROFILE, [edit("Drama", kind="dislike")], [], CATALOG, T0)
    assert "Drama" not in [i.name for i in held.interests] and [d.name for d in held.dislikes] == ["Drama"]
    events_before_the_edit = [rated("d1", 1, 0), rated("d2", 1, 0)]  # not after it: no contrary evidence
    assert uphold(PROFILE, [edit("Comedy")], events_before_the_edit, CATALOG, T0).edits == ["added interest Comedy"]
