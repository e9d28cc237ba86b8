"""The re-ranker against a misbehaving LLM: every reply, however broken, still yields k valid items.

The LLM here is a fake OpenAI-compatible server scripted to fail in each way a real one can (malformed,
out-of-set, duplicate, truncated and empty replies, time-outs, 5xx). It proves the error paths only;
that ranking works is shown against the real vLLM in test_ranking_vllm.py. The catalog, the user and
the candidates are real MovieLens-100K data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest

from driftrec.config import Settings
from driftrec.data import Dataset, load_movielens_100k
from driftrec.llm import LLM, LLMClient
from driftrec.llm.checkpoint import PreparedModel
from driftrec.models import Candidate, Provenance
from driftrec.privacy import acting_for
from driftrec.ranking import RankContext, RankingPolicy, RankResult, RecentItem, Reranker
from tests.fake_openai import Behaviour, FakeOpenAI, completion, serve_fake

K = 10


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


@pytest.fixture(scope="module")
def context(ml100k: Dataset) -> RankContext:
    """User 1's last 10 movies, and 20 popular movies they have not seen as the retrieved candidates."""
    history = ml100k.by_user()["1"]
    seen = frozenset(e.item for e in history)
    counts: dict[str, int] = {}
    for event in ml100k.interactions:
        counts[event.item] = counts.get(event.item, 0) + 1
    unseen = [i for i in sorted(counts, key=lambda i: -counts[i]) if i not in seen][:20]
    candidates = [
        Candidate(item=ml100k.items[i], score=1 / n, provenance=[Provenance(source="popularity", score=1 / n, rank=n)])
        for n, i in enumerate(unseen, start=1)
    ]
    recent = [RecentItem(ml100k.items[e.item], f"rated {e.rating:g}/5") for e in history[-10:]]
    return RankContext(user="1", candidates=candidates, k=K, recent=recent, seen=seen)


def assert_valid(result: RankResult, context: RankContext) -> None:
    allowed = {c.item.id for c in context.candidates}
    assert len(result.items) == min(context.k, len(context.eligible()))
    assert len(set(result.items)) == len(result.items), "duplicates"
    assert set(result.items) <= allowed, "outside the candidate set"
    assert not set(result.items) & context.seen, "already consumed"
    assert [r.rank for r in result.recommendations] == list(range(1, len(result.items) + 1))


def llm_for(fake: FakeOpenAI, prepared: PreparedModel, **client_options) -> LLM:
    options = {"timeout_s": 5.0, "max_retries": 1, "backoff_s": 0.01} | client_options
    return LLM(LLMClient(fake.base_url, "fake", **options), prepared.token_counter(), 8192)


def retrieval_order(context: RankContext) -> list[str]:
    return [c.item.id for c in context.eligible()][:K]


def ranking_reply(*labels: str) -> Behaviour:
    return Behaviour(body=completion(json.dumps({"ranking": list(labels)})))


async def rank(fake: FakeOpenAI, prepared: PreparedModel, context: RankContext, **policy) -> RankResult:
    options = {"mode": "listwise", "llm_weight": 1.0, "timeout_s": 2.0} | policy
    async with serve_fake(fake):
        llm = llm_for(fake, prepared)
        try:
            return await Reranker(llm, RankingPolicy(**options)).rank(context)
        finally:
            await llm.aclose()


async def test_a_valid_listwise_reply_orders_the_top(prepared: PreparedModel, context: RankContext) -> None:
    result = await rank(FakeOpenAI().then(ranking_reply("C", "A", "T")), prepared, context)
    assert_valid(result, context)
    ids = [c.item.id for c in context.eligible()]
    assert result.items[:3] == [ids[2], ids[0], ids[19]]
    assert not result.degraded and result.errors.filled == K - 3
    assert result.prompt_id == "rank_listwise@v2"


@pytest.mark.parametrize(
    ("reply", "field", "count"),
    [
        (ranking_reply("B", "ZZ", "A", "Q9"), "candidate_errors", 2),
        (ranking_reply("B", "B", "A", "B"), "duplicate_errors", 2),
    ],
    ids=["out-of-set", "duplicates"],
)
async def test_bad_references_are_dropped_counted_and_filled(
    prepared: PreparedModel, context: RankContext, reply: Behaviour, field: str, count: int
) -> None:
    result = await rank(FakeOpenAI().then(reply), prepared, context)
    assert_valid(result, context)
    assert getattr(result.errors, field) == count
    assert result.items[0] == context.eligible()[1].item.id  # "B" survives and leads
    assert not result.degraded


async def test_naming_a_movie_the_user_already_rated_is_a_history_error(
    prepared: PreparedModel, context: RankContext
) -> None:
    watched = context.recent[-1].item  # shown to the model as recently watched
    result = await rank(FakeOpenAI().then(ranking_reply(watched.title, watched.id, "B")), prepared, context)
    assert_valid(result, context)
    assert result.errors.history_errors == 2 and watched.id not in result.items
    assert result.items[0] == context.eligible()[1].item.id


async def test_a_truncated_reply_keeps_what_it_managed_to_say(prepared: PreparedModel, context: RankContext) -> None:
    cut = Behaviour(body=completion('{"ranking": [{"item": "E"}, {"item": "D"}, {"item": "C', finish_reason="length"))
    result = await rank(FakeOpenAI().then(cut), prepared, context)
    assert_valid(result, context)
    assert result.items[:2] == [context.eligible()[4].item.id, context.eligible()[3].item.id]
    assert result.errors.invalid_outputs == 1 and not result.degraded


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(body=completion("this is not json")),
        Behaviour(body=completion("")),
        Behaviour(body=completion('{"ranking": []}')),
        Behaviour(body=completion('{"ranking": [{"item": "nope"}]}')),
        Behaviour(raw="<html>502 bad gateway</html>", status=502),
        Behaviour(body={"error": {"message": "bad request"}}, status=400),
    ],
    ids=["malformed", "empty", "empty-list", "nothing-valid", "5xx", "4xx"],
)
async def test_nothing_usable_degrades_to_the_retrieval_order(
    prepared: PreparedModel, context: RankContext, behaviour: Behaviour
) -> None:
    fake = FakeOpenAI(default=behaviour)
    result = await rank(fake, prepared, context)
    assert_valid(result, context)
    assert result.degraded and all(r.degraded for r in result.recommendations)
    assert result.items == retrieval_order(context)
    assert result.errors.fallbacks == 1 and result.error


async def test_a_time_out_degrades_quickly(prepared: PreparedModel, context: RankContext) -> None:
    fake = FakeOpenAI(default=Behaviour(body=completion('{"ranking": [{"item": "B"}]}'), delay_s=30))
    result = await rank(fake, prepared, context, timeout_s=0.5)
    assert_valid(result, context)
    assert result.degraded and "LLMTimeout" in (result.error or "")
    assert result.seconds < 10


async def test_a_fallback_is_logged_under_the_pseudonym_never_the_user_id(
    prepared: PreparedModel, context: RankContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The server log keeps what it is given: a user it names could never be forgotten from it."""
    user = "someone-private@example.org"
    context = dataclasses.replace(context, user=user)
    fake = FakeOpenAI(default=Behaviour(status=500))
    with caplog.at_level(logging.WARNING, logger="driftrec"), acting_for("a1b2c3pseudonym"):
        result = await rank(fake, prepared, context, explain=True, reasons=True)
    assert result.degraded
    lines = [r.getMessage() for r in caplog.records]
    assert any("ranking for user a1b2c3pseudonym fell back" in line for line in lines), lines
    assert not [line for line in lines if user in line]


async def test_one_failed_shuffle_round_does_not_sink_the_others(prepared: PreparedModel, context: RankContext) -> None:
    fake = FakeOpenAI().then(ranking_reply("C"), Behaviour(status=500), Behaviour(status=500), ranking_reply("C"))
    result = await rank(fake, prepared, context, shuffles=2)
    assert_valid(result, context)
    assert not result.degraded and result.items[0] == context.eligible()[2].item.id


async def test_verbalizer_without_logprobs_degrades(prepared: PreparedModel, context: RankContext) -> None:
    fake = FakeOpenAI(default=Behaviour(body=completion("A", logprobs=[])))
    result = await rank(fake, prepared, context, mode="verbalizer")
    assert_valid(result, context)
    assert result.degraded and result.items == retrieval_order(context)


async def test_verbalizer_ranks_by_the_returned_logprobs(prepared: PreparedModel, context: RankContext) -> None:
    # The fake returns logprobs for three labels only (a non-vLLM server's top-k); the rest keep their order.
    fake = FakeOpenAI(default=Behaviour(body=completion("D", logprobs=[("D", -0.1), ("B", -1.0), ("Q", -2.0)])))
    result = await rank(fake, prepared, context, mode="verbalizer")
    assert_valid(result, context)
    ids = [c.item.id for c in context.eligible()]
    assert result.items[:4] == [ids[3], ids[1], ids[16], ids[0]]
    assert result.recommendations[0].extra["logprob"] == -0.1


async def test_failed_explanations_fall_back_to_template_reasons(prepared: PreparedModel, context: RankContext) -> None:
    fake = FakeOpenAI(default=Behaviour(status=500)).then(
        Behaviour(body=completion(json.dumps({"ranking": [{"item": "A", "reason": ""}]})))
    )
    result = await rank(fake, prepared, context, explain=True, reasons=True)
    assert_valid(result, context)
    assert not result.degraded
    assert all(r.reason and r.extra["reason_source"] == "template" for r in result.recommendations)


async def test_with_no_llm_at_all_the_answer_is_retrieval_without_a_degraded_flag(context: RankContext) -> None:
    result = await Reranker(None, RankingPolicy(llm_weight=1.0)).rank(context)
    assert_valid(result, context)
    assert result.items == retrieval_order(context) and not result.degraded


async def test_explanations_for_many_items_are_one_capped_call(prepared: PreparedModel, context: RankContext) -> None:
    """k = 15 with explanations: one rank call and one explanation call (issue 15: it was 1 + k calls),
    reasons for the first ``explain_max`` items within a bounded reply, templates for the rest."""
    wide = RankContext(**{**context.__dict__, "k": 15})
    reasons = {label: f"Reason {label}." for label in "ABCDE"}
    fake = FakeOpenAI().then(ranking_reply("C", "A"), Behaviour(body=completion(json.dumps(reasons))))
    result = await rank(fake, prepared, wide, explain=True, explain_max=5, explain_tokens=200)
    assert_valid(result, wide)
    assert len(fake.requests) == 2
    explain = fake.requests[1]
    assert explain["max_tokens"] == 200
    assert list(explain["response_format"]["json_schema"]["schema"]["required"]) == list("ABCDE")
    sources = [r.extra["reason_source"] for r in result.recommendations]
    assert sources == ["llm"] * 5 + ["template"] * 10
    assert [r.reason for r in result.recommendations[:5]] == [f"Reason {label}." for label in "ABCDE"]


async def test_one_deadline_covers_the_llm_work_of_a_request(prepared: PreparedModel, context: RankContext) -> None:
    """A slow LLM: the answer comes at the deadline, in retrieval order, saying why."""
    fake = FakeOpenAI(default=Behaviour(body=completion("{}"), delay_s=10))
    started = time.perf_counter()
    result = await rank(fake, prepared, context, timeout_s=1.0, explain=True)
    elapsed = time.perf_counter() - started
    assert_valid(result, context)
    assert result.degraded and result.items == retrieval_order(context)
    assert "deadline" in (result.error or "") or "1.0s" in (result.error or ""), result.error
    assert elapsed < 2.5
    assert len(fake.requests) == 1  # no explanation call after the deadline passed
