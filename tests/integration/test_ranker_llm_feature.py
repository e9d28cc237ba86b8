"""`driftrec eval ranker --llm-feature` against the real embedded vLLM (SmolLM2-135M) on real MovieLens users:
each user's learned top window is scored by the served model's label logprobs, the records are written as
users finish and a re-run asks the LLM nothing, and the second phase is measured with and without the LLM's
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


async def test_the_llm_scores_each_learned_window_and_the_second_phase_is_measured(
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
    }
    assert all(0 <= v <= 1 for v in feature.ndcg.values())
    assert all(0 <= t["p_value"] <= 1 for t in feature.tests.values())
    assert feature.latency["calls"] == USERS and feature.latency["p50 s"] > 0
    assert "LLM as a ranker feature" in report.markdown()

    records = tmp_path / "out" / f"llm-feature-{safe_name(llm.client.model)}-w{WINDOW}.jsonl"
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == USERS
    learned_top = {s.name: s for s in report.systems}["driftrec-learned"]  # the study's own rows exist
    assert learned_top.metrics["ndcg@10"] == pytest.approx(feature.ndcg["driftrec-learned"])
    for record in lines:
        assert len(record["shown"]) == WINDOW == len(set(record["shown"]))
        assert sorted(record["order"]) == sorted(record["shown"])  # the LLM orders exactly what it was shown
        probabilities = [math.exp(v) for v in record["logprobs"].values()]
        assert set(record["logprobs"]) == set(record["shown"]) and math.fsum(probabilities) == pytest.approx(1.0)

    calls = llm.client.usage.calls
    again, _ = await study()  # resumed from the records: the same columns, no new LLM call
    assert again.llm_feature is not None and again.llm_feature.ndcg == feature.ndcg
    assert len(records.read_text().splitlines()) == USERS and llm.client.usage.calls == calls
