"""Grounding: the LLM names interests, the user's own events decide whether they stand and how strongly.

Every number below is computed by hand from the events in the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from driftrec.memory.drift import DriftPolicy, ProfileProposal, ProposedInterest, apply_proposal
from driftrec.memory.evidence import claimable, gather, ground, polarity
from driftrec.models import Action, Interaction, InterestProfile, Item, StatedPreference

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CATALOG = {
    "sw": Item(id="sw", title="Star Wars", genres=("Action", "Sci-Fi")),
    "al": Item(id="al", title="Alien", genres=("Horror", "Sci-Fi")),
    "ts": Item(id="ts", title="Toy Story", genres=("Comedy",)),
    "sc": Item(id="sc", title="Scream", genres=("Horror",)),
    "fa": Item(id="fa", title="Fargo", genres=("Crime", "Drama")),
}


def rated(item: str, rating: float, minute: int = 0) -> Interaction:
    return Interaction(user="u", item=item, action=Action.RATE, rating=rating, timestamp=T0 + timedelta(minutes=minute))


def proposal(likes: list[str], dislikes: list[str]) -> ProfileProposal:
    return ProfileProposal(
        interests=[ProposedInterest(name=n, weight=0.2) for n in likes],
        dislikes=[ProposedInterest(name=n, weight=1.0) for n in dislikes],
    )


def test_what_counts_as_evidence() -> None:
    assert [polarity(rated("sw", r)) for r in (5, 4, 3, 2, 1)] == [1, 1, 0, -1, -1]
    at = {"timestamp": T0, "user": "u", "item": "sw"}
    assert polarity(Interaction(action=Action.LIKE, **at)) == 1
    assert polarity(Interaction(action=Action.VIEW, **at)) == 1  # implicit feedback: the user chose it
    assert polarity(Interaction(action=Action.SKIP, **at)) == -1
    assert polarity(Interaction(action=Action.DISLIKE, **at)) == -1


def test_a_dislike_of_a_genre_the_user_rated_5_is_rejected() -> None:
    # Star Wars 5 (Action, Sci-Fi +1 each), Alien 2 (Horror, Sci-Fi -1 each), Scream 1 (Horror -1)
    window = [rated("sw", 5), rated("al", 2, 1), rated("sc", 1, 2)]
    kept, rejected = ground(proposal([], ["Sci-Fi", "Horror"]), gather(window, CATALOG))
    assert [(r.name, r.kind, r.reason) for r in rejected] == [("Sci-Fi", "dislike", "liked 1 times, disliked 1")]
    [horror] = kept.dislikes
    assert (horror.name, horror.positive, horror.negative, horror.weight) == ("Horror", 0, 2, 1.0)
    assert horror.evidence == ["al", "sc"]


def test_a_like_with_only_low_ratings_or_no_events_is_rejected() -> None:
    window = [rated("sc", 2), rated("ts", 5, 1)]
    kept, rejected = ground(proposal(["Horror", "Western", "Comedy"], []), gather(window, CATALOG))
    assert [r.name for r in rejected] == ["Horror", "Western"]
    assert rejected[0].reason == "no liked item of it in the window"
    assert [i.name for i in kept.interests] == ["Comedy"]


def test_weights_and_support_come_from_the_data_not_the_llm() -> None:
    # positives: Star Wars (Action, Sci-Fi), Alien (Horror, Sci-Fi), Toy Story (Comedy) -> Sci-Fi 2, others 1
    window = [rated("sw", 5), rated("al", 4, 1), rated("ts", 4, 2)]
    kept, rejected = ground(proposal(["Sci-Fi", "Comedy"], []), gather(window, CATALOG))
    assert rejected == []
    by_name = {i.name: i for i in kept.interests}
    assert by_name["Sci-Fi"].weight == 1.0 and by_name["Comedy"].weight == 0.5  # 2/2 and 1/2 (top genre = 2)
    assert by_name["Sci-Fi"].support == round(2 / 5, 6)  # 5 positive genre-events in the window
    assert by_name["Sci-Fi"].evidence == ["sw", "al"] and by_name["Sci-Fi"].positive == 2


def test_stated_preferences_are_evidence_too() -> None:
    said = [StatedPreference(user="u", name="Western", polarity="like", text="more westerns")]
    kept, rejected = ground(proposal(["Western"], []), gather([], CATALOG, said))
    assert rejected == []
    [western] = kept.interests
    assert western.source == "stated" and western.evidence == [] and western.positive == 1


def test_grounded_counts_accumulate_in_the_profile() -> None:
    policy = DriftPolicy(alpha=0.5)
    empty = InterestProfile(user="u", version=0, updated_at=T0)
    first, _ = ground(proposal(["Sci-Fi"], []), gather([rated("sw", 5)], CATALOG))
    v1 = apply_proposal(empty, first, T0, policy)
    assert v1.interests[0].weight == 0.5  # alpha * 1.0: a new interest earns its place over sessions
    second, _ = ground(proposal(["Sci-Fi"], []), gather([rated("al", 5), rated("sw", 4)], CATALOG))
    v2 = apply_proposal(v1, second, T0 + timedelta(days=1), policy)
    [scifi] = v2.interests
    assert scifi.weight == 0.75 and scifi.positive == 3  # 0.5 * 0.5 + 0.5 * 1.0; 1 + 2 events
    assert scifi.evidence == ["al", "sw"]


def test_the_names_offered_to_the_llm_are_exactly_those_grounding_keeps() -> None:
    # Sci-Fi liked twice, disliked once; Horror liked once, disliked twice; Comedy and Action liked only;
    # Crime and Drama disliked only (and stated dislike of Western with no event)
    window = [rated("sw", 5), rated("al", 4, 1), rated("sc", 1, 2), rated("ts", 4, 3), rated("fa", 2, 4)]
    window.append(rated("al", 2, 5))
    said = [StatedPreference(user="u", name="Western", polarity="dislike")]
    evidence = gather(window, CATALOG, said)
    vocabulary = ["Action", "Comedy", "Crime", "Drama", "Horror", "Sci-Fi", "Western", "Musical"]
    liked, disliked = claimable(evidence, vocabulary)
    assert liked == ["Action", "Comedy", "Sci-Fi"]  # Sci-Fi 2 liked, 1 disliked; Horror 1 liked, 2 disliked
    assert disliked == ["Crime", "Drama", "Horror", "Western"]
    kept, rejected = ground(proposal(vocabulary, vocabulary), evidence)  # every name claimed both ways
    assert [i.name for i in kept.interests] == liked and [d.name for d in kept.dislikes] == disliked
    assert {(r.name, r.kind) for r in rejected} == {(n, "interest") for n in vocabulary if n not in liked} | {
        (n, "dislike") for n in vocabulary if n not in disliked
    }
