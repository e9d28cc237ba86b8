"""Grounding: every interest and dislike in a profile is backed by the user's own events.

The LLM names interests; this code decides whether the user's events of the same window support
them, and how strongly. It lives next to the blend/decay rule (drift.py) for the same reason: what
reaches a profile is decided by code that can be tested by hand, never by the model alone.

An event is positive evidence for each genre of its item when it is a rating of 4 or more (on the 1-5
scale), a like or a purchase, or an unrated view or click (implicit feedback: the user chose it); it is
negative evidence when it is a rating of 2 or less, a dislike or a skip. A 3 is neither. A stated
preference from chat counts once for its genre, the way the user said it.

- an interest is kept only with positive evidence and no more negative than positive evidence;
- a dislike is kept only with negative evidence that outweighs the positive (a user who rated a
  Sci-Fi film 5 in the window does not dislike Sci-Fi because the model says so);
- the weight the LLM's proposal carries into the blend is the data's: the genre's positive count over
  the strongest genre's (dislikes: negative counts likewise); ``support`` is the genre's share of the
  window's positive events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from driftrec.memory.drift import ProfileProposal, ProposedInterest
from driftrec.models import Action, Interaction, Item, StatedPreference

POSITIVE_ACTIONS = {Action.LIKE, Action.PURCHASE}
NEGATIVE_ACTIONS = {Action.DISLIKE, Action.SKIP}
IMPLICIT_ACTIONS = {Action.VIEW, Action.CLICK}


def polarity(event: Interaction) -> int:
    """+1 positive, -1 negative, 0 neither (see the module doc)."""
    if event.rating is not None:
        return 1 if event.rating >= 4 else -1 if event.rating <= 2 else 0
    if event.action in POSITIVE_ACTIONS or event.action in IMPLICIT_ACTIONS:
        return 1
    return -1 if event.action in NEGATIVE_ACTIONS else 0


@dataclass
class GenreEvidence:
    positive: list[str] = field(default_factory=list)  # items (or "stated"), oldest first
    negative: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rejection:
    """An LLM claim the evidence does not back, and why."""

    name: str
    kind: str  # "interest" | "dislike"
    reason: str


def gather(
    events: Iterable[Interaction], catalog: Mapping[str, Item], stated: Sequence[StatedPreference] = ()
) -> dict[str, GenreEvidence]:
    """Positive and negative evidence per genre (case-insensitive key) from a window of events."""
    found: dict[str, GenreEvidence] = defaultdict(GenreEvidence)
    for event in events:
        item = catalog.get(event.item)
        sign = polarity(event)
        if item is None or sign == 0:
            continue
        for genre in item.genres:
            side = found[_key(genre)].positive if sign > 0 else found[_key(genre)].negative
            side.append(item.id)
    for statement in stated:
        evidence = found[_key(statement.name)]
        (evidence.positive if statement.polarity == "like" else evidence.negative).append("stated")
    return dict(found)


def ground(proposal: ProfileProposal, evidence: Mapping[str, GenreEvidence]) -> tuple[ProfileProposal, list[Rejection]]:
    """The proposal with every unsupported claim removed and data-derived weights; and what was removed."""
    rejected: list[Rejection] = []
    top_positive = max((len(e.positive) for e in evidence.values()), default=0)
    top_negative = max((len(e.negative) for e in evidence.values()), default=0)
    all_positive = sum(len(e.positive) for e in evidence.values())

    interests: list[ProposedInterest] = []
    for claim in proposal.interests:
        e = evidence.get(_key(claim.name), GenreEvidence())
        pos, neg = len(e.positive), len(e.negative)
        if why := _not_an_interest(pos, neg):
            rejected.append(Rejection(claim.name, "interest", why))
        else:
            interests.append(_grounded(claim, e.positive, pos, neg, pos / top_positive, pos / all_positive))
    dislikes: list[ProposedInterest] = []
    for claim in proposal.dislikes:
        e = evidence.get(_key(claim.name), GenreEvidence())
        pos, neg = len(e.positive), len(e.negative)
        if why := _not_a_dislike(pos, neg):
            rejected.append(Rejection(claim.name, "dislike", why))
        else:
            dislikes.append(_grounded(claim, e.negative, pos, neg, neg / top_negative, 0.0))
    return proposal.model_copy(update={"interests": interests, "dislikes": dislikes}), rejected


def claimable(evidence: Mapping[str, GenreEvidence], vocabulary: Sequence[str]) -> tuple[list[str], list[str]]:
    """The names of ``vocabulary`` that ``ground`` would keep as interests, and as dislikes, given this
    evidence: what a proposal's schema offers the LLM, so it cannot name what would be refused (``ground``
    still checks every claim)."""
    counts = {name: evidence.get(_key(name), GenreEvidence()) for name in vocabulary}
    interests = [n for n, e in counts.items() if not _not_an_interest(len(e.positive), len(e.negative))]
    dislikes = [n for n, e in counts.items() if not _not_a_dislike(len(e.positive), len(e.negative))]
    return interests, dislikes


def _not_an_interest(pos: int, neg: int) -> str | None:
    """Why a genre with this evidence is not an interest (None: it is one)."""
    if pos == 0:
        return "no liked item of it in the window"
    return f"disliked {neg} times, liked {pos}" if neg > pos else None


def _not_a_dislike(pos: int, neg: int) -> str | None:
    """Why a genre with this evidence is not a dislike (None: it is one)."""
    if neg == 0:
        return "no disliked item of it in the window"
    return f"liked {pos} times, disliked {neg}" if pos >= neg else None


def _grounded(
    claim: ProposedInterest, items: list[str], pos: int, neg: int, weight: float, support: float
) -> ProposedInterest:
    real = [i for i in dict.fromkeys(items) if i != "stated"]
    return claim.model_copy(
        update={
            "weight": round(weight, 6),
            "evidence": real[-10:],
            "positive": pos,
            "negative": neg,
            "support": round(support, 6),
            "source": "stated" if not real else claim.source,
        }
    )


def _key(name: str) -> str:
    return " ".join(name.lower().split())
