"""The LLM study end to end with the real embedded model: a small run writes per-user JSONL, a JSON
and Markdown report and a plot; the weight is chosen on validation; a re-run is free (resume + cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.llm_study import WEIGHTS, label, run_llm_eval
from driftrec.llm import LLM

pytestmark = pytest.mark.vllm


async def test_a_small_llm_study_reports_and_resumes(settings: Settings, llm: LLM, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    studies = await run_llm_eval(settings, dataset, llm, users=6, out_dir=tmp_path)
    valid, test = studies["valid"], studies["test"]
    assert valid.best_weight in WEIGHTS and test.best_weight == valid.best_weight  # chosen on validation only
    for study in (valid, test):
        assert study.users == 6 and set(study.results) == {label(w) for w in WEIGHTS}
        assert study.errors["candidate_errors"] == study.errors["duplicate_errors"] == 0
        assert study.errors["history_errors"] == study.errors["fallbacks"] == 0
        assert study.cost["completion_tokens_per_recommendation"] == 1  # the verbalizer: one token
        for metrics in study.results.values():
            assert 0 <= metrics["ndcg@10"] <= 1
    lines = (tmp_path / "verbalizer-retrieved-full-x1-test.jsonl").read_text().splitlines()
    assert len(lines) == 6 and {json.loads(line)["user"] for line in lines} == {str(u) for u in range(1, 7)}
    assert (tmp_path / "verbalizer-retrieved-full-x1.png").stat().st_size > 1000
    assert "Weight chosen on validation" in (tmp_path / "verbalizer-retrieved-full-x1.md").read_text()

    calls = llm.client.usage.calls
    again = await run_llm_eval(settings, dataset, llm, users=6, out_dir=tmp_path)
    assert llm.client.usage.calls == calls  # every user was already recorded: no LLM call at all
    assert again["test"].results == test.results
