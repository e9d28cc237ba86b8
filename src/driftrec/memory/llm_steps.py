"""The two LLM steps of memory: summarize a session, propose a profile update.

Both replies are constrained by a JSON schema built for the call: item references are an enum of the
session's labels (the model cannot name an item that is not there), and names of themes and interests
are an enum of the catalog's vocabulary when one is configured (MovieLens genres by default), so a
small model's output stays comparable from version to version. A profile update's interests and dislikes
each get the narrower enum the caller gives: the genres the window's events back (evidence.claimable).
The reply is validated with pydantic and turned into driftrec's models here; what happens to the profile
is decided by drift.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from driftrec.llm import LLM
from driftrec.llm.bounds import reply_tokens
from driftrec.memory.drift import ProfileProposal, ProposedInterest
from driftrec.memory.evidence import polarity
from driftrec.memory.profiles import profile_document, summary_document
from driftrec.models import Action, InterestProfile, Item, ItemEvidence, Session, SessionSummary
from driftrec.prompts import render

LIKED = {Action.LIKE, Action.PURCHASE}
DISLIKED = {Action.DISLIKE, Action.SKIP}


FREE_NAME_CHARS = 40  # a free-text name in a reply (each step's max_tokens covers every bound filled: llm/bounds.py)


def _names(vocabulary: Sequence[str] | None) -> Any:
    """Names from the vocabulary, else free text of at most ``FREE_NAME_CHARS`` (the profile accepts 80: a
    small model given 80 writes them all out, and a reply's tokens grow with them: llm/bounds.py). No
    pattern: xgrammar (the embedded server's backend) refuses a string with both a pattern and length
    bounds, so a blank name is dropped by code instead (``_named``)."""
    if vocabulary:
        return Literal[tuple(vocabulary)]  # type: ignore[valid-type]
    return Annotated[str, Field(min_length=1, max_length=FREE_NAME_CHARS)]


def _named(names: Sequence[str]) -> list[str]:
    """The names as given, without repeats and without blank ones (free text can be all spaces)."""
    return [n for n in dict.fromkeys(names) if n.strip()]


def summary_schema(labels: Sequence[str], vocabulary: Sequence[str] | None, *, min_liked: int = 0) -> type[BaseModel]:
    """``min_liked``: 1 when the session has a positive event, so a small model under the grammar cannot
    answer with empty lists (the cheapest valid JSON); which item it names is still checked by code."""
    label = Literal[tuple(labels)]  # type: ignore[valid-type]
    theme = _names(vocabulary)
    return create_model(
        "SessionSummaryDraft",
        themes=(list[theme], Field(min_length=min_liked, max_length=4)),  # type: ignore[valid-type]
        liked=(list[label], Field(min_length=min_liked, max_length=10)),  # type: ignore[valid-type]
        disliked=(list[label], Field(max_length=10)),  # type: ignore[valid-type]
        intent=(str, Field(max_length=120)),
    )


def proposal_schema(
    vocabulary: Sequence[str] | None,
    *,
    min_interests: int = 0,
    dislike_vocabulary: Sequence[str] | None = None,
) -> type[BaseModel]:
    """Interests named from ``vocabulary`` and dislikes from ``dislike_vocabulary`` (default: the same); with a
    vocabulary given and empty, that list must be empty. ``min_interests``: 1 when the sessions hold liked
    items (see summary_schema); evidence.py then keeps only what the user's events support."""
    dislike_vocabulary = vocabulary if dislike_vocabulary is None else dislike_vocabulary
    strength = (Literal[1, 2, 3, 4, 5], ...)
    none_liked = vocabulary is not None and not vocabulary
    none_disliked = dislike_vocabulary is not None and not dislike_vocabulary
    # an empty vocabulary names its (never generated) entries as free text: the list's bound keeps it empty
    liked = create_model("InterestDraft", name=(_names(vocabulary), ...), strength=strength)
    disliked = create_model("DislikeDraft", name=(_names(dislike_vocabulary), ...), strength=strength)
    return create_model(
        "ProfileDraft",
        interests=(
            list[liked],
            Field(min_length=0 if none_liked else min_interests, max_length=0 if none_liked else 8),
        ),  # type: ignore[valid-type]
        dislikes=(list[disliked], Field(max_length=0 if none_disliked else 4)),  # type: ignore[valid-type]
        summary=(str, Field(max_length=160)),
    )


async def summarize_session(
    llm: LLM,
    session: Session,
    catalog: Mapping[str, Item],
    profile: InterestProfile,
    *,
    vocabulary: Sequence[str] | None,
    max_items: int = 30,
    max_tokens: int = 256,
) -> tuple[SessionSummary, str]:
    """The LLM's summary of one session, and the prompt version that made it."""
    events = [e for e in session.interactions if e.item in catalog][-max_items:]
    rows = [
        {
            "label": str(n),
            "title": catalog[e.item].title,
            "genres": ", ".join(catalog[e.item].genres),
            "signal": e.signal(),
        }
        for n, e in enumerate(events, start=1)
    ]
    by_label = {row["label"]: e.item for row, e in zip(rows, events, strict=True)}
    positive = any(polarity(e) > 0 for e in events)
    schema = summary_schema(list(by_label) or ["1"], vocabulary, min_liked=int(positive and bool(by_label)))
    max_tokens = reply_tokens(schema, max_tokens, at_most=llm.context_window // 2)  # every bound filled still fits
    prompt = render(
        "session_summary",
        {"rows": rows, "profile_text": profile_document(profile) if profile.version else ""},
        counter=llm.tokens,
        budget=llm.context_window - max_tokens,
    )
    draft = (await llm.client.structured(prompt.messages, schema, max_tokens=max_tokens)).value
    liked = list(dict.fromkeys(by_label[label] for label in draft.liked if label in by_label))
    disliked = [
        i for i in dict.fromkeys(by_label[label] for label in draft.disliked if label in by_label) if i not in liked
    ]
    summary = SessionSummary(
        user=session.user,
        session_id=session.session_id,
        themes=_named(draft.themes)[:8],
        liked=[ItemEvidence(item=i, why="liked in session") for i in liked],
        disliked=[ItemEvidence(item=i, why="disliked in session") for i in disliked],
        intent=draft.intent,
        created_at=session.ended_at,
    )
    return summary, prompt.id


async def propose_update(
    llm: LLM,
    profile: InterestProfile,
    summaries: Sequence[SessionSummary],
    titles: Mapping[str, str],
    *,
    vocabulary: Sequence[str] | None,
    dislike_vocabulary: Sequence[str] | None = None,
    stated: Sequence[str] = (),
    max_tokens: int = 384,
) -> tuple[ProfileProposal, str]:
    """The LLM's proposed interests (named from ``vocabulary``) and dislikes (from ``dislike_vocabulary``,
    default the same): names and strengths; evidence.py grounds them.

    Raises PromptTooLong when these summaries do not fit the context window: the caller folds fewer
    at a time."""
    liked_any = any(s.liked for s in summaries) or any(line.startswith("wants more") for line in stated)
    schema = proposal_schema(vocabulary, min_interests=int(liked_any), dislike_vocabulary=dislike_vocabulary)
    max_tokens = reply_tokens(schema, max_tokens, at_most=llm.context_window // 2)  # every bound filled still fits
    prompt = render(
        "profile_update",
        {
            "profile_text": profile_document(profile) if profile.version else "",
            "sessions": [summary_document(s, dict(titles)) for s in summaries],
            "stated": list(stated),
        },
        counter=llm.tokens,
        budget=llm.context_window - max_tokens,
    )
    draft = (await llm.client.structured(prompt.messages, schema, max_tokens=max_tokens)).value

    def merged(entries: Sequence[Any]) -> list[ProposedInterest]:
        best: dict[str, int] = {}
        for entry in entries:
            if entry.name.strip():
                best[entry.name] = max(best.get(entry.name, 0), int(entry.strength))
        return [ProposedInterest(name=n, weight=s / 5) for n, s in best.items()]

    return ProfileProposal(
        interests=merged(draft.interests), dislikes=merged(draft.dislikes), summary=draft.summary
    ), prompt.id
