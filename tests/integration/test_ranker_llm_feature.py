"""`driftrec eval ranker --llm-feature` against the real embedded vLLM (SmolLM2-135M) on real MovieLens users:
each user's learned top window is scored by the served model's label logprobs — once after the user's latest
items, once after their count-based profile (the profile-match judgement) — the records are written as users
finish and a re-run asks the LLM nothing, and the second phase is measured with and without each call's
columns. (Whether the LLM helps is the study's answer on all users: docs/results.md.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.ranker_study import run_ranker_study
from driftrec.llm import LLM
from driftrec.records import safe_name

pytestmark = pytest.mark.vllm
USERS = 50  # the fewest the study cross-fits over
WINDOW = 10
KINDS = ("llm-feature", "llm-profile")  # after the latest items, after the count-based profile


async def test_the_llm_scores_each_learned_window_twice_and_the_second_phase_is_measured(
    settings: Settings, llm: LLM, tmp_path: Path
) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    own = settings.model_copy(update={"data_dir": tmp_path / "data", "chroma_path": tmp_path / "data" / "chroma"})

    async def study() -> object:
        return await run_ranker_study(
            own,
            dataset,
            users=USERS,
            stages=2,
            baselines=("most-popular",),
            ablate=False,
            sampled=False,
            llm=llm,
            llm_window=WINDOW,
            llm_out=tmp_path / "out",
            llm_profile=True,
        )

    report, _ = await study()
    feature = report.llm_feature
    assert feature is not None and feature.users == USERS and feature.window == WINDOW
    assert feature.model == llm.client.model and feature.missing == 0
    assert set(feature.ndcg) == {
        "driftrec-learned",
        "LLM order of the window",
        "second phase without LLM columns",
        "second phase with LLM columns",
        "LLM order of the window from the profile",
        "second phase with profile columns",
        "second phase with LLM and profile columns",
    }
    assert all(0 <= v <= 1 for v in feature.ndcg.values())
    assert all(0 <= t["p_value"] <= 1 for t in feature.tests.values())
    assert {"with LLM columns vs without", "with profile columns vs without"} <= set(feature.tests)
    assert set(feature.importance) == {
        "learned_score",
        "learned_rank",
        "llm_logprob",
        "llm_rank",
        "profile_logprob",
        "profile_rank",
    }
    assert feature.latency["calls"] == USERS and feature.latency["p50 s"] > 0
    assert feature.profile_latency["calls"] == USERS and feature.profile_latency["p50 s"] > 0
    assert "LLM as a ranker feature" in report.markdown() and "from the profile" in report.markdown()

    learned_top = {s.name: s for s in report.systems}["driftrec-learned"]  # the study's own rows exist
    assert learned_top.metrics["ndcg@10"] == pytest.approx(feature.ndcg["driftrec-learned"])
    files = [tmp_path / "out" / f"{kind}-{safe_name(llm.client.model)}-w{WINDOW}.jsonl" for kind in KINDS]
    items, profiled = ({r["user"]: r for r in map(json.loads, f.read_text().splitlines())} for f in files)
    assert len(items) == len(profiled) == USERS
    for user, record in items.items():
        assert len(record["shown"]) == WINDOW == len(set(record["shown"]))
        assert profiled[user]["shown"] == record["shown"]  # the same window, judged from the profile
        for judged in (record, profiled[user]):
            assert sorted(judged["order"]) == sorted(judged["shown"])  # the LLM orders exactly what it was shown
            probabilities = [math.exp(v) for v in judged["logprobs"].values()]
            assert set(judged["logprobs"]) == set(judged["shown"])
            assert math.fsum(probabilities) == pytest.approx(1.0)
    assert any(items[u]["prompt_tokens"] != profiled[u]["prompt_tokens"] for u in items)  # two different heads

    calls = llm.client.usage.calls
    again, _ = await study()  # resumed from the records: the same columns, no new LLM call
    assert again.llm_feature is not None and again.llm_feature.ndcg == feature.ndcg
    assert all(len(f.read_text().splitlines()) == USERS for f in files) and llm.client.usage.calls == calls
