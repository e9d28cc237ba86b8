"""The drift rule, on cases computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftrec.memory import DriftPolicy, ProfileProposal, ProposedInterest, apply_proposal, decay
from driftrec.models import Interest, InterestProfile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = DriftPolicy(alpha=0.5, half_life=timedelta(days=10), min_weight=0.05, max_interests=3)


def interest(name: str, weight: float) -> Interest:
    return Interest(name=name, weight=weight, evidence=["1"], first_seen=T0, last_seen=T0)


def profile(*interests: Interest, dislikes: tuple[Interest, ...] = ()) -> InterestProfile:
    return InterestProfile(user="u", version=3, interests=list(interests), dislikes=list(dislikes), updated_at=T0)


def by_name(p: InterestProfile) -> dict[str, float]:
    return {i.name: round(i.weight, 6) for i in p.interests}


def test_proposed_again_blends_old_and_new() -> None:
    new = apply_proposal(
        profile(interest("sci-fi", 0.8)),
        ProfileProposal(interests=[ProposedInterest(name="Sci-Fi", weight=0.4, evidence=["50"])]),
        T0 + timedelta(days=1),
        POLICY,
    )
    assert by_name(new) == {"sci-fi": 0.6}  # 0.5 * 0.8 + 0.5 * 0.4; names match case-insensitively
    assert new.interests[0].evidence == ["50", "1"]
    assert new.version == 4 and new.updated_at == T0 + timedelta(days=1)


def test_unmentioned_interests_decay_with_the_half_life() -> None:
    new = apply_proposal(profile(interest("westerns", 0.8)), ProfileProposal(), T0 + timedelta(days=10), POLICY)
    assert by_name(new) == {"westerns": 0.4}
    assert decay(0.8, timedelta(days=20), timedelta(days=10)) == pytest.approx(0.2)


def test_new_interests_start_at_alpha_times_their_weight_and_weak_ones_fade_out() -> None:
    old = profile(interest("horror", 0.06))
    new = apply_proposal(
        old, ProfileProposal(interests=[ProposedInterest(name="comedy", weight=0.9)]), T0 + timedelta(days=10), POLICY
    )
    assert by_name(new) == {"comedy": 0.45}  # horror decayed to 0.03 < min_weight: dropped


def test_at_most_max_interests_are_kept_strongest_first() -> None:
    proposal = ProfileProposal(
        interests=[ProposedInterest(name=n, weight=w) for n, w in [("a", 0.2), ("b", 0.9), ("c", 0.6), ("d", 0.8)]]
    )
    new = apply_proposal(profile(), proposal, T0, POLICY)
    assert list(by_name(new)) == ["b", "d", "c"]


def test_dislikes_survive_without_contrary_evidence_and_go_with_it() -> None:
    old = profile(dislikes=(interest("horror", 0.7),))
    quiet = apply_proposal(old, ProfileProposal(), T0 + timedelta(days=365), POLICY)
    assert [d.name for d in quiet.dislikes] == ["horror"] and quiet.dislikes[0].weight == 0.7  # no decay
    liked_again = apply_proposal(
        old, ProfileProposal(interests=[ProposedInterest(name="Horror", weight=0.6)]), T0 + timedelta(days=1), POLICY
    )
    assert liked_again.dislikes == [] and "Horror" in by_name(liked_again)


def test_a_new_dislike_removes_the_interest() -> None:
    old = profile(interest("horror", 0.9))
    new = apply_proposal(
        old, ProfileProposal(dislikes=[ProposedInterest(name="horror", weight=0.8)]), T0 + timedelta(days=1), POLICY
    )
    assert by_name(new) == {}
    assert [(d.name, d.weight) for d in new.dislikes] == [("horror", 0.8)]
