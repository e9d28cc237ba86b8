"""Explanations: which profile interests or session themes a recommendation matches, and optionally an
LLM-written sentence grounded in exactly those (the prompt shows nothing else to draw on)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from driftrec.llm import LLM
from driftrec.models import InterestProfile, Item, Provenance
from driftrec.prompts import render

TEMPLATE = "explain"


def matched_interests(item: Item, profile: InterestProfile | None, themes: Sequence[str] = ()) -> list[str]:
    """Profile interests (strongest first) and session themes that the item carries.

    An interest matches when it names one of the item's genres or appears in its text, case-insensitive.
    """
    genres = {g.lower() for g in item.genres}
    text = item.document().lower()

    def hit(name: str) -> bool:
        lowered = name.lower()
        return lowered in genres or (len(lowered) > 3 and lowered in text)

    names: list[str] = []
    if profile is not None:
        names += [i.name for i in sorted(profile.interests, key=lambda i: -i.weight) if hit(i.name)]
    names += [t for t in themes if hit(t)]
    return list(dict.fromkeys(names))


class _Reason(BaseModel):
    reason: str = Field(min_length=1, max_length=200)


SOURCE_REASONS = {
    "cooc": "Often watched right after movies you watched recently.",
    "vector": "Similar to what you have been watching.",
    "popularity": "Popular with other viewers right now.",
}


def template_reason(
    item: Item, matched: Sequence[str], provenance: Sequence[Provenance] = (), profile: InterestProfile | None = None
) -> str:
    """The reason when no LLM reason is available: plain, and true by construction (it says which
    profile interests the item carries, else which themes of recent sessions, else which candidate
    source found it). A session theme is not called an interest: it is the summary's, not the profile's."""
    interests = {i.name for i in profile.interests} if profile is not None else set()
    held = [m for m in matched if m in interests]
    if held:
        return f"Matches your interest in {', '.join(held[:3])}."
    if matched:
        return f"Like your recent sessions ({', '.join(matched[:3])})."
    for p in sorted(provenance, key=lambda p: p.rank):
        if p.source in SOURCE_REASONS:
            return SOURCE_REASONS[p.source]
    return "Picked from the catalog for your recent activity."


async def llm_reason(llm: LLM, item: Item, matched: Sequence[str], profile_text: str, *, max_tokens: int = 80) -> str:
    prompt = render(
        TEMPLATE,
        {"item": item.document(), "matched": ", ".join(matched), "profile_text": profile_text},
        counter=llm.tokens,
        budget=llm.context_window - max_tokens,
    )
    result = await llm.client.structured(prompt.messages, _Reason, max_tokens=max_tokens)
    return result.value.reason.strip()
