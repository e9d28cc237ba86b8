"""Listwise ranking: the LLM writes the top-k as JSON, its item field an enum of the candidate labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from driftrec.llm import LLM, InvalidLLMOutput, Usage
from driftrec.llm.bounds import reply_room
from driftrec.models import Candidate
from driftrec.prompts import render
from driftrec.ranking.context import RankContext, prompt_variables
from driftrec.ranking.validate import salvage

TEMPLATE = "rank_listwise"


def listwise_schema(labels: Sequence[str], k: int, reasons: bool) -> type[BaseModel]:
    """``{"ranking": ["C", "A", ...]}``, or with reasons ``{"ranking": [{"item": "C", "reason": "..."}]}``,
    exactly k entries; every item is an enum of the candidate labels.

    The fixed length means the grammar, not the model, decides when the list ends, so a presence
    penalty (which also hits the "," token) can discourage repeated labels without cutting lists short.
    """
    label = Literal[tuple(labels)]  # type: ignore[valid-type]
    entry: Any = label
    if reasons:
        entry = create_model("RankedCandidate", item=(label, ...), reason=(str, Field(max_length=120)))
    return create_model("Ranking", ranking=(list[entry], Field(min_length=k, max_length=k)))  # type: ignore[valid-type]


@dataclass
class ListwiseReply:
    labels: list[str]  # what the model named, in its order (may include bad references when salvaged)
    reasons: dict[str, str] = field(default_factory=dict)  # label -> reason
    invalid: bool = False  # the reply did not validate and was salvaged
    usage: Usage = field(default_factory=Usage)
    prompt_id: str = ""
    prompt_tokens: int = 0


async def rank_listwise(
    llm: LLM,
    context: RankContext,
    shown: Sequence[Candidate],
    labels: Sequence[str],
    *,
    reasons: bool = False,
    max_tokens: int = 256,
    timeout_s: float | None = None,
    presence_penalty: float = 0.0,
) -> ListwiseReply:
    """One listwise call over ``shown`` (labeled ``labels``). Raises InvalidLLMOutput if nothing is usable."""
    k = min(context.k, len(shown))
    prompt = render(
        TEMPLATE,
        prompt_variables(context, shown, labels, k=k, reasons=reasons),
        counter=llm.tokens,
        budget=llm.context_window - max_tokens,
    )
    schema = listwise_schema(labels, k, reasons)
    max_tokens = reply_room(schema, max_tokens, context_window=llm.context_window, prompt_tokens=prompt.tokens)
    try:
        result = await llm.client.structured(
            prompt.messages,
            schema,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            sampling={"presence_penalty": presence_penalty} if presence_penalty else None,
        )
    except InvalidLLMOutput as exc:
        found = salvage(exc.raw)
        if not found:
            raise
        return ListwiseReply(found, invalid=True, prompt_id=prompt.id, prompt_tokens=prompt.tokens)
    entries = result.value.ranking  # type: ignore[attr-defined]
    return ListwiseReply(
        [e if isinstance(e, str) else e.item for e in entries],
        {e.item: e.reason for e in entries if not isinstance(e, str) and e.reason},
        usage=result.usage,
        prompt_id=prompt.id,
        prompt_tokens=prompt.tokens,
    )
