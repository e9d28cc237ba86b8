"""Explanations: which profile interests or session themes a recommendation matches, and optionally
LLM-written sentences grounded in exactly those (the prompt shows nothing else to draw on), all of one
answer's in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, create_model

from driftrec.llm import LLM
from driftrec.models import InterestProfile, Item, Provenance
from driftrec.prompts import render
from driftrec.ranking.context import LABELS

TEMPLATE = "explain"


def matched_interests(item: Item, profile: InterestProfile | None, themes: Sequence[str] = ()) -> list[str]:
    """Profile interests (strongest first) and session themes that the item carries.

    An interest matches when it names one of the item's genres or appears in its text, case-insensitive.
    """
    if not themes and (profile is None or not profile.interests):
        return []  # nothing to look for: the item's text is not made (a user with no profile yet, every answer)
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


SOURCE_REASONS = {
    "cooc": "Often watched together with movies you watched recently.",
    "transition": "Often watched next after movies you watched recently.",
    "knn": "Often watched by the people who watched what you watched.",
    "als": "Fits the pattern of everything you have watched.",
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


def reasons_schema(labels: Sequence[str], max_length: int = 200) -> type[BaseModel]:
    """One required string per label, nothing else: under guided decoding every item gets a reason."""
    fields: dict[str, Any] = {label: (str, Field(min_length=1, max_length=max_length)) for label in labels}
    return create_model("Reasons", **fields)


async def llm_reasons(
    llm: LLM,
    items: Sequence[tuple[Item, Sequence[str]]],
    profile_text: str,
    *,
    tokens_per_reason: int = 60,
    max_tokens: int = 600,
    timeout_s: float | None = None,
) -> list[str]:
    """Reasons for ``items`` (each with the interests it matched) in one structured call, in order.

    The reply budget is ``tokens_per_reason`` per item, capped at ``max_tokens``: bounded work however
    many items are asked for (callers cap the count too). Raises LLMError / PromptError on failure."""
    labels = list(LABELS[: len(items)])
    budget = min(max_tokens, tokens_per_reason * len(items) + 16)
    prompt = render(
        TEMPLATE,
        {
            "items": [
                {"label": label, "text": item.document(), "matched": ", ".join(matched)}
                for label, (item, matched) in zip(labels, items, strict=True)
            ],
            "profile_text": profile_text,
        },
        counter=llm.tokens,
        budget=llm.context_window - budget,
    )
    result = await llm.client.structured(
        prompt.messages, reasons_schema(labels), max_tokens=budget, timeout_s=timeout_s
    )
    written = result.value.model_dump()
    return [" ".join(str(written[label]).split()) for label in labels]
