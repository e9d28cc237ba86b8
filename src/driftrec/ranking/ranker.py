"""The re-ranking step: LLM ranking over shuffles, validation, fusion with retrieval, explanations.

``Reranker.rank`` never raises for an LLM problem and always returns ``min(k, eligible candidates)``
items: if the LLM is down, times out, or says nothing usable, the answer is the retrieval order with
``degraded`` set. What the LLM contributes is controlled by ``llm_weight`` (0: retrieval only, the LLM
is not called; 1: the LLM's order alone), which the evaluation harness chooses on a validation split.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from driftrec.config import RankingSettings
from driftrec.llm import LLM, LLMError, Usage
from driftrec.models import Candidate, Recommendation, trusted
from driftrec.privacy import subject
from driftrec.prompts import PromptError
from driftrec.ranking.aggregate import borda, fuse_with_retrieval, shuffles
from driftrec.ranking.context import LABELS, RankContext
from driftrec.ranking.explain import llm_reasons, matched_interests, template_reason
from driftrec.ranking.listwise import rank_listwise
from driftrec.ranking.second_phase import LLMScores, SecondPhase, normalized, prompt_context
from driftrec.ranking.validate import RankErrors, repair
from driftrec.ranking.verbalizer import rank_verbalizer

log = logging.getLogger(__name__)

Mode = Literal["verbalizer", "listwise", "off"]


# What the re-ranker does is the ranking settings group itself: one set of defaults (config.py), and a
# Reranker is handed that group alone. Evaluations build one with their own values, e.g.
# RankingPolicy(mode="listwise", llm_weight=1.0).
RankingPolicy = RankingSettings


@dataclass
class RankResult:
    recommendations: list[Recommendation]
    mode: str
    degraded: bool = False
    error: str | None = None
    errors: RankErrors = field(default_factory=RankErrors)
    usage: Usage = field(default_factory=Usage)
    prompt_id: str | None = None
    llm_order: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def items(self) -> list[str]:
        return [r.item.id for r in self.recommendations]


@dataclass
class _Round:
    order: list[str]
    reasons: dict[str, str]
    errors: RankErrors
    usage: Usage
    prompt_id: str
    logprobs: dict[str, float] = field(default_factory=dict)


class Reranker:
    def __init__(self, llm: LLM | None, policy: RankingPolicy | None = None):
        self.llm = llm
        self.policy = policy or RankingPolicy()

    def reorders(self) -> bool:
        """Whether ``rank`` may move a candidate from past the first ``k`` into the answer (an LLM ranking
        pass). When it does not, the answer is the first ``k`` eligible candidates in the order given, and a
        caller can hand it just enough of them."""
        return self.llm is not None and self.policy.mode != "off" and self.policy.llm_weight > 0

    async def rank(
        self,
        context: RankContext,
        *,
        mode: Mode | None = None,
        llm_weight: float | None = None,
        explain: bool | None = None,
        deadline: float | None = None,
        second_phase: SecondPhase | None = None,
    ) -> RankResult:
        """``deadline`` (``time.monotonic()``): when the answer is due, e.g. the request's arrival plus
        ``timeout_s`` (the default counts from now). LLM work past it is dropped for the retrieval order.
        ``second_phase``: the candidates are in the learned ranker's order (their scores its scores) and this
        phase re-orders its top window from the LLM's judgement of it, instead of fusion by ``llm_weight``."""
        started = time.perf_counter()
        policy = self.policy
        if second_phase is not None and self.llm is not None:
            return await self._second_phase(context, second_phase, explain, deadline, started)
        mode = mode or policy.mode
        weight = policy.llm_weight if llm_weight is None else llm_weight
        eligible = context.eligible()
        retrieval_order = [c.item.id for c in eligible]
        errors = RankErrors(requests=1)
        result = RankResult([], mode if weight > 0 else "off", errors=errors)
        mode = result.mode  # type: ignore[assignment]
        limit = min(policy.candidates, len(LABELS)) if mode == "listwise" else policy.candidates
        shown = eligible[:limit]
        rounds: list[_Round] = []
        deadline = time.monotonic() + policy.timeout_s if deadline is None else deadline
        asks = self.llm is not None and mode != "off" and weight > 0 and len(shown) > 1
        busy = self.llm.client.busy(deadline - time.monotonic()) if asks and self.llm is not None else None
        if busy:  # shed at once: the queue is longer than the time left
            result.error = f"LLMTimeout: {busy}"
        elif asks:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    rounds = await self._rounds(context, shown, mode, deadline)
            except TimeoutError:
                result.error = f"LLMTimeout: no LLM ranking within the request's deadline ({policy.timeout_s:g}s)"
                log.warning("ranking for user %s fell back to retrieval: %s", subject(), result.error)
            except (LLMError, PromptError) as exc:
                result.error = f"{type(exc).__name__}: {exc}"
                log.warning("ranking for user %s fell back to retrieval: %s", subject(), result.error)
        for r in rounds:
            errors += r.errors
            result.usage.add(r.usage)
        usable = [r for r in rounds if r.order]
        if usable:
            result.llm_order = borda([r.order for r in usable], [c.item.id for c in shown])
            fused = fuse_with_retrieval(result.llm_order, retrieval_order, weight, rrf_k=policy.rrf_k)
            result.prompt_id = usable[0].prompt_id
        else:
            fused = [(c.item.id, c.score) for c in eligible]
            if result.mode != "off" and self.llm is not None and len(shown) > 1:
                result.degraded = True
                errors.fallbacks += 1
                result.error = result.error or "the LLM returned no usable ranking"
        result.errors = errors
        reasons = {i: text for r in usable for i, text in r.reasons.items()}
        logprobs = usable[0].logprobs if usable else {}
        result.recommendations = await self._recommendations(
            context, eligible, fused[: min(context.k, len(eligible))], result, reasons, logprobs, explain, deadline
        )
        result.seconds = time.perf_counter() - started
        return result

    async def _second_phase(
        self, context: RankContext, phase: SecondPhase, explain: bool | None, deadline: float | None, started: float
    ) -> RankResult:
        """One verbalizer call over the learned top window, shown in learned order as in training; the phase
        orders the window, the rest keeps the learned order. Any LLM failure leaves the learned order, degraded."""
        assert self.llm is not None
        eligible = context.eligible()
        shown = eligible[: min(phase.card.window, self.llm.client.max_logprobs)]
        errors = RankErrors(requests=1)
        result = RankResult([], "second-phase", errors=errors)
        fused = [(c.item.id, c.score) for c in eligible]
        deadline = time.monotonic() + self.policy.timeout_s if deadline is None else deadline
        reply = None
        if len(shown) > 1:
            busy = self.llm.client.busy(deadline - time.monotonic())
            try:
                if busy:
                    raise TimeoutError(busy)
                async with asyncio.timeout(deadline - time.monotonic()):
                    reply = await rank_verbalizer(
                        self.llm,
                        prompt_context(context, shown),
                        shown,
                        window=len(shown),
                        timeout_s=max(0.001, deadline - time.monotonic()),
                    )
            except TimeoutError as exc:
                result.error = (
                    f"LLMTimeout: {exc or f'no LLM judgement within the deadline ({self.policy.timeout_s:g}s)'}"
                )
            except (LLMError, PromptError) as exc:
                result.error = f"{type(exc).__name__}: {exc}"
        logprobs: dict[str, float] = {}
        if reply is not None:
            errors.replies += 1
            result.usage.add(reply.usage)
            result.prompt_id, result.llm_order = reply.prompt_id, reply.order
            logprobs = normalized(reply.logprobs)
            record = LLMScores(context.user, [c.item.id for c in shown], logprobs, reply.order)
            window = phase.order(record, {c.item.id: c.score for c in shown})
            rest = fused[len(shown) :]
            scores = dict(fused)
            fused = [(i, scores[i]) for i in window] + rest
        elif len(shown) > 1:
            result.degraded = True
            errors.fallbacks += 1
            log.warning("the second phase for user %s kept the learned order: %s", subject(), result.error)
        result.recommendations = await self._recommendations(
            context, eligible, fused[: min(context.k, len(eligible))], result, {}, logprobs, explain, deadline
        )
        result.seconds = time.perf_counter() - started
        return result

    async def _rounds(self, context: RankContext, shown: list[Candidate], mode: Mode, deadline: float) -> list[_Round]:
        by_id = {c.item.id: c for c in shown}
        orders = shuffles(list(by_id), self.policy.shuffles, seed=f"{context.user}")
        calls = [self._listwise if mode == "listwise" else self._verbalizer for _ in orders]
        replies = await asyncio.gather(
            *(call(context, [by_id[i] for i in order], deadline) for call, order in zip(calls, orders, strict=True)),
            return_exceptions=True,
        )
        good = [r for r in replies if isinstance(r, _Round)]
        failures = [r for r in replies if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, LLMError | PromptError):
                raise failure
        if not good and failures:
            raise failures[0]
        return good

    async def _listwise(self, context: RankContext, shown: list[Candidate], deadline: float) -> _Round:
        labels = list(LABELS[: len(shown)])
        reply = await rank_listwise(
            self.llm,  # type: ignore[arg-type]
            context,
            shown,
            labels,
            reasons=self.policy.reasons,
            max_tokens=self.policy.max_tokens,
            timeout_s=max(0.001, deadline - time.monotonic()),
            presence_penalty=self.policy.presence_penalty,
        )
        label_map = {lab: c.item.id for lab, c in zip(labels, shown, strict=True)}
        seen_names = {i: i for i in context.seen} | {
            r.item.title.lower(): r.item.id for r in context.recent if r.item.id in context.seen
        }
        order, errors = repair(reply.labels, label_map, [c.item.id for c in shown], context.k, seen=seen_names)
        errors.invalid_outputs += int(reply.invalid)
        proposed_valid = len(order) - errors.filled
        reasons = {label_map[lab]: text for lab, text in reply.reasons.items() if lab in label_map}
        return _Round(order if proposed_valid else [], reasons, errors, reply.usage, reply.prompt_id)

    async def _verbalizer(self, context: RankContext, shown: list[Candidate], deadline: float) -> _Round:
        reply = await rank_verbalizer(
            self.llm,  # type: ignore[arg-type]
            context,
            shown,
            window=self.policy.window,
            timeout_s=max(0.001, deadline - time.monotonic()),
        )
        return _Round(reply.order, {}, RankErrors(replies=1), reply.usage, reply.prompt_id, reply.logprobs)

    async def _recommendations(
        self,
        context: RankContext,
        eligible: list[Candidate],
        fused: list[tuple[str, float]],
        result: RankResult,
        reasons: dict[str, str],
        logprobs: dict[str, float],
        explain: bool | None,
        deadline: float,
    ) -> list[Recommendation]:
        by_id = {c.item.id: c for c in eligible}
        retrieval_rank = {c.item.id: n for n, c in enumerate(eligible, start=1)}
        llm_rank = {i: n for n, i in enumerate(result.llm_order, start=1)}
        matched = {i: matched_interests(by_id[i].item, context.profile, context.themes) for i, _ in fused}
        written = dict(reasons)
        left = deadline - time.monotonic()
        wanted = self.policy.explain if explain is None else explain
        if wanted and self.llm is not None and not result.degraded and left > 0:
            todo = [i for i, _ in fused if i not in written][: self.policy.explain_max]
            try:
                texts = await llm_reasons(
                    self.llm,
                    [(by_id[i].item, matched[i]) for i in todo],
                    context.profile_text,
                    max_tokens=self.policy.explain_tokens,
                    timeout_s=left,
                )
                written |= dict(zip(todo, texts, strict=True))
            except (LLMError, PromptError) as exc:
                log.warning("explanations for user %s fell back to templates: %s", subject(), exc)
        return [  # built from values made here (ranks from 1, texts, the candidates' own parts): not validated again
            trusted(
                Recommendation,
                {
                    "item": by_id[item].item,
                    "rank": n,
                    "score": float(score),
                    "reason": written.get(item)
                    or template_reason(by_id[item].item, matched[item], by_id[item].provenance, context.profile),
                    "matched_interests": list(matched[item]),
                    "provenance": list(by_id[item].provenance),
                    "degraded": result.degraded,
                    "extra": {
                        "retrieval_rank": retrieval_rank[item],
                        **({"llm_rank": llm_rank[item]} if item in llm_rank else {}),
                        **({"logprob": round(logprobs[item], 4)} if item in logprobs else {}),
                        "reason_source": "llm" if item in written else "template",
                    },
                },
            )
            for n, (item, score) in enumerate(fused, start=1)
        ]
