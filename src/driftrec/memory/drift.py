"""The drift rule: how a long-term profile changes when the LLM proposes an update.

Deterministic on purpose: the LLM proposes interests with weights, this code decides.
- an interest the LLM proposes again: w' = (1 - alpha) * w + alpha * w_new;
- a new interest: w' = alpha * w_new (it has to earn its place over several sessions);
- an interest with no new evidence: exponential decay, w' = w * 0.5 ** (elapsed / half_life);
- interests that decay below ``min_weight`` are dropped; at most ``max_interests`` are kept;
- an explicit dislike is never dropped by decay; only contrary evidence (the LLM proposing the same
  name as an interest) removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from driftrec.models import Interest, InterestProfile


def _blend(prior: Interest, p: ProposedInterest, alpha: float, now: datetime) -> Interest:
    """w' = (1 - alpha) * w + alpha * w_new; evidence and counts accumulate, support is the latest window's."""
    return prior.model_copy(
        update={
            "weight": (1 - alpha) * prior.weight + alpha * p.weight,
            "evidence": list(dict.fromkeys([*p.evidence, *prior.evidence]))[:20],
            "positive": prior.positive + p.positive,
            "negative": prior.negative + p.negative,
            "support": p.support,
            "last_seen": now,
        }
    )


def _fresh(p: ProposedInterest, weight: float, now: datetime) -> Interest:
    return Interest(
        name=p.name,
        weight=weight,
        evidence=p.evidence[:20],
        positive=p.positive,
        negative=p.negative,
        support=p.support,
        source=p.source,
        first_seen=now,
        last_seen=now,
    )


class ProposedInterest(BaseModel):
    """One claim for the next version; after grounding (evidence.py) its weight and counts are the data's."""

    name: str = Field(min_length=1, max_length=80)
    weight: float = Field(ge=0.0, le=1.0)
    evidence: list[str] = Field(default_factory=list, max_length=20)
    positive: int = Field(default=0, ge=0)
    negative: int = Field(default=0, ge=0)
    support: float = Field(default=0.0, ge=0.0, le=1.0)
    source: Literal["llm", "stated", "edit"] = "llm"


class ProfileProposal(BaseModel):
    """What the LLM suggests after reading the old profile and new session summaries."""

    interests: list[ProposedInterest] = Field(default_factory=list, max_length=20)
    dislikes: list[ProposedInterest] = Field(default_factory=list, max_length=10)
    summary: str = Field(default="", max_length=2000)


@dataclass(frozen=True)
class DriftPolicy:
    alpha: float = 0.5
    half_life: timedelta = timedelta(days=30)
    min_weight: float = 0.05
    max_interests: int = 12


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def decay(weight: float, elapsed: timedelta, half_life: timedelta) -> float:
    if elapsed <= timedelta(0):
        return weight
    return weight * 0.5 ** (elapsed / half_life)


def apply_proposal(
    old: InterestProfile, proposal: ProfileProposal, now: datetime, policy: DriftPolicy
) -> InterestProfile:
    """The next version of ``old`` given ``proposal`` at time ``now``."""
    proposed = {_key(p.name): p for p in proposal.interests}
    proposed_dislikes = {_key(p.name): p for p in proposal.dislikes}
    interests: dict[str, Interest] = {}
    for interest in old.interests:
        key = _key(interest.name)
        if key in proposed_dislikes:  # contrary evidence: the user turned against it
            continue
        if key in proposed:
            interests[key] = _blend(interest, proposed[key], policy.alpha, now)
        else:
            weight = decay(interest.weight, now - old.updated_at, policy.half_life)
            if weight >= policy.min_weight:
                interests[key] = interest.model_copy(update={"weight": weight})
    for key, p in proposed.items():
        if key not in interests and key not in {_key(i.name) for i in old.interests}:
            if key in proposed_dislikes:
                continue
            interests[key] = _fresh(p, policy.alpha * p.weight, now)
    kept = sorted(interests.values(), key=lambda i: -i.weight)[: policy.max_interests]

    dislikes: dict[str, Interest] = {}
    for dislike in old.dislikes:
        key = _key(dislike.name)
        if key in proposed and key not in proposed_dislikes:  # contrary evidence: liked again
            continue
        dislikes[key] = dislike
    for key, p in proposed_dislikes.items():
        if key in dislikes:
            dislikes[key] = _blend(dislikes[key], p, policy.alpha, now)
        else:
            dislikes[key] = _fresh(p, max(p.weight, policy.min_weight), now)
    return InterestProfile(
        user=old.user,
        version=old.version + 1,
        interests=kept,
        dislikes=list(dislikes.values()),
        summary=proposal.summary or old.summary,
        updated_at=now,
        rejected=[],
    )
