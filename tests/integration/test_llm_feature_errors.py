"""The LLM-feature study against a misbehaving LLM (a fake OpenAI-compatible server: error paths only; that
the columns come from a real model is test_ranker_llm_feature.py's job against vLLM). A failed call records
nothing, so the next run asks again; a label the server gave no logprob for is missing, not invented."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.protocols import first_users, leave_one_out
from driftrec.llm import LLM, LLMClient
from driftrec.llm.checkpoint import PreparedModel
from driftrec.models import Candidate, Provenance
from driftrec.ranking import Reranker, build_context
from driftrec.ranking.second_phase import SecondPhase, score_windows
from tests.fake_openai import Behaviour, FakeOpenAI, completion, serve_fake


async def scored(fake: FakeOpenAI, prepared: PreparedModel, settings: Settings, out: Path) -> dict:
    dataset = load_movielens_100k(settings.cache_dir)
    splits = leave_one_out(dataset)
    users = first_users(splits, 3)
    windows = {}
    for user in users:
        seen = {e.item for e in splits[user].seen_before("test")}
        windows[user] = [i for i in sorted(dataset.items) if i not in seen][:5]
    async with serve_fake(fake):
        llm = LLM(
            LLMClient(fake.base_url, "fake", timeout_s=5.0, max_retries=1, backoff_s=0.01),
            prepared.token_counter(),
            8192,
        )
        try:
            return await score_windows(
                llm, {u: splits[u].seen_before("test") for u in windows}, dataset.items, windows, out=out
            )
        finally:
            await llm.aclose()


async def test_a_failing_llm_records_nothing_and_the_next_run_asks_again(
    settings: Settings, prepared: PreparedModel, tmp_path: Path
) -> None:
    out = tmp_path / "records.jsonl"
    failed = await scored(FakeOpenAI(default=Behaviour(status=500)), prepared, settings, out)
    assert len(failed) == 3 and all(not r.logprobs for r in failed.values())  # no column from a failed call
    assert not out.exists()

    answers = completion("A", logprobs=[("A", -0.2), ("C", -1.5), ("B", -2.0)])  # D and E: no logprob given
    fake = FakeOpenAI(default=Behaviour(body=answers))
    records = await scored(fake, prepared, settings, out)
    assert len(fake.requests) == 3  # every user asked again
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["user"] for line in lines) == sorted(records)
    for record in records.values():
        assert set(record.logprobs) == set(record.shown[:3])  # A, B, C; D and E missing, not invented
        assert math.fsum(math.exp(v) for v in record.logprobs.values()) == pytest.approx(1.0)
        assert record.order[0] == record.shown[0] and sorted(record.order) == sorted(record.shown)

    again = FakeOpenAI(default=Behaviour(status=500))
    resumed = await scored(again, prepared, settings, out)
    assert not again.requests and {u: r.logprobs for u, r in resumed.items()} == {
        u: r.logprobs for u, r in records.items()
    }


async def test_the_served_second_phase_keeps_the_learned_order_when_the_llm_fails_or_says_nothing(
    settings: Settings, prepared: PreparedModel
) -> None:
    """recommend()'s second phase against a misbehaving endpoint: a failing call, or a reply without logprobs,
    leaves the learned order, degraded and saying why; labels without a logprob stay missing, not invented."""
    dataset = load_movielens_100k(settings.cache_dir)
    splits = leave_one_out(dataset)
    user = first_users(splits, 1)[0]
    history = splits[user].seen_before("test")
    seen = {e.item for e in history}
    shown = [i for i in sorted(dataset.items) if i not in seen][:12]
    candidates = [
        Candidate(
            item=dataset.items[i],
            score=1.0 - 0.01 * n,
            provenance=[Provenance(source="learned", score=0.0, rank=n + 1)],
        )
        for n, i in enumerate(shown)
    ]
    context = build_context(user, candidates, 10, history=history, catalog=dataset.items)
    phase = trained_phase()

    async def ranked(fake: FakeOpenAI):  # type: ignore[no-untyped-def]
        async with serve_fake(fake):
            client = LLMClient(fake.base_url, "served-model", timeout_s=5.0, max_retries=1, backoff_s=0.01)
            llm = LLM(client, prepared.token_counter(), 8192)
            try:
                return await Reranker(llm, settings.ranking).rank(context, second_phase=phase)
            finally:
                await llm.aclose()

    failed = await ranked(FakeOpenAI(default=Behaviour(status=500)))
    assert failed.mode == "second-phase" and failed.degraded and failed.error and "500" in failed.error
    assert failed.items == shown[:10]  # the learned order, whole

    mute = await ranked(FakeOpenAI(default=Behaviour(body=completion("A"))))  # no logprobs: not an answer
    assert mute.items == shown[:10] and mute.degraded and mute.error and "InvalidLLMOutput" in mute.error

    partial = await ranked(FakeOpenAI(default=Behaviour(body=completion("C", logprobs=[("C", -0.1)]))))
    assert not partial.degraded and len(set(partial.items)) == 10 and set(partial.items) <= set(shown)
    judged = {r.item.id: r.extra["logprob"] for r in partial.recommendations if "logprob" in r.extra}
    assert judged == {shown[2]: 0.0}  # only C has a probability (all of it); the rest are missing, not invented


def trained_phase() -> SecondPhase:
    """A phase on made-up windows (tests/unit/test_second_phase.py's), for the served model's name."""
    from tests.unit.test_second_phase import windows

    records, scores, targets = windows()
    return SecondPhase.train(records, scores, targets, model="served-model", ranker="r", window=12)
