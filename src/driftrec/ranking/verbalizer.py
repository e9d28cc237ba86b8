"""Verbalizer ranking (LlamaRec): one forward pass per window, ranked by the labels' next-token logprobs.

A window holds at most 26 candidates (one letter each), and never more than the server returns
log-probabilities for (``client.max_logprobs``, found at connect). Larger candidate sets play a tournament: every
window is scored at once (vLLM batches them), the best of each advance to a final window, and the order
is the final's, then the rest by their place in their own window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from driftrec.llm import LLM, Usage
from driftrec.models import Candidate
from driftrec.prompts import render
from driftrec.ranking.context import LABELS, RankContext, prompt_variables

TEMPLATE = "rank_verbalizer"


@dataclass
class VerbalizerReply:
    order: list[str]  # item ids, best first
    logprobs: dict[str, float] = field(default_factory=dict)  # item id -> logprob in its last window
    usage: Usage = field(default_factory=Usage)
    prompt_id: str = ""
    calls: int = 0
    missing: int = 0  # labels the server gave no logprob for


async def _window(
    llm: LLM, context: RankContext, shown: Sequence[Candidate], timeout_s: float | None
) -> VerbalizerReply:
    labels = list(LABELS[: len(shown)])
    prompt = render(
        TEMPLATE, prompt_variables(context, shown, labels), counter=llm.tokens, budget=llm.context_window - 1
    )
    scores = await llm.client.label_logprobs(prompt.messages, labels, timeout_s=timeout_s)
    by_label = {lab: c.item.id for lab, c in zip(labels, shown, strict=True)}
    ranked = scores.ranked()  # stable sort: ties (e.g. two -inf) keep the shown order
    return VerbalizerReply(
        [by_label[lab] for lab in ranked],
        {by_label[lab]: scores.logprobs[lab] for lab in labels},
        scores.usage,
        prompt.id,
        1,
        len(scores.missing),
    )


async def rank_verbalizer(
    llm: LLM,
    context: RankContext,
    shown: Sequence[Candidate],
    *,
    window: int = 20,
    timeout_s: float | None = None,
) -> VerbalizerReply:
    """Rank ``shown`` (in the order given) by label logprobs; a tournament when it exceeds ``window``."""
    window = max(2, min(window, len(LABELS), llm.client.max_logprobs))
    if len(shown) <= window:
        return await _window(llm, context, shown, timeout_s)
    chunks = [list(shown[i : i + window]) for i in range(0, len(shown), window)]
    replies = await asyncio.gather(*(_window(llm, context, chunk, timeout_s) for chunk in chunks))
    keep = max(1, window // len(chunks))
    by_id = {c.item.id: c for c in shown}
    advanced = [by_id[i] for reply in replies for i in reply.order[:keep]]
    final = await rank_verbalizer(llm, context, advanced, window=window, timeout_s=timeout_s)
    rest = [r.order[j] for j in range(keep, window) for r in replies if j < len(r.order)]
    usage = Usage()
    for part in [*replies, final]:
        usage.add(part.usage)
    logprobs = {i: lp for r in replies for i, lp in r.logprobs.items()} | final.logprobs
    return VerbalizerReply(
        final.order + rest,
        logprobs,
        usage,
        final.prompt_id,
        sum(r.calls for r in replies) + final.calls,
        sum(r.missing for r in replies) + final.missing,
    )
