"""Session replay end to end with the real embedded model and real MovieLens-100K: memory is built by
replaying earlier sessions through the LLM, every ranker runs on the same users, the report and plots are
written, nothing from the target session reaches memory, and a re-run costs no LLM call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.protocols import first_users, session_replay
from driftrec.eval.session_study import LONG_TERM, TUNED, run_session_study
from driftrec.llm import LLM
from driftrec.memory.service import Memory

pytestmark = pytest.mark.vllm

USERS = 3


async def test_session_replay_study_with_memory_and_llm(settings: Settings, llm: LLM, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    own = settings.model_copy(update={"data_dir": tmp_path / "data", "chroma_path": tmp_path / "data" / "chroma"})
    run = dict(users=USERS, profile_sessions=2, contexts=("full", "raw-history"), listwise=False, learned=False)
    run |= dict(out_dir=tmp_path)  # the learned stage has its own test (test_session_learned.py)
    studies = await run_session_study(own, dataset, llm, **run)
    valid, test = studies["valid"], studies["test"]

    names = {s.name for s in test.systems}
    assert {"random", "most-popular", "item-knn", "bpr", "cooc", "popularity", TUNED} <= names
    assert {"LLM verbalizer, full", "LLM verbalizer, raw-history"} <= names
    assert set(test.alpha_sweep) == set(LONG_TERM)  # u_l from the history, the evolving and the static profile
    assert test.chosen == valid.chosen  # alpha, fusion and LLM weights come from validation only
    for study in (valid, test):
        assert study.users == USERS
        assert study.errors["candidate_errors"] == study.errors["duplicate_errors"] == 0
        assert study.errors["history_errors"] == study.errors["fallbacks"] == 0
        assert study.cost["verbalizer, full"]["completion_tokens"] == 1
        for system in study.systems:
            assert 0 <= system.metrics["ndcg@10"] <= 1 and system.ci[0] <= system.ci[1]

    report = json.loads((tmp_path / "sessions.json").read_text())
    assert report["test"]["protocol"].startswith("session replay")
    assert "NDCG@10 by alpha" in (tmp_path / "sessions.md").read_text()
    for plot in ("sessions-ndcg.png", "sessions-alpha.png", "sessions-profiles.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    assert len((tmp_path / "sessions-verbalizer-full-test.jsonl").read_text().splitlines()) == USERS

    # Memory saw only what happened before each target session, and evolved over the replayed sessions.
    splits = session_replay(dataset)
    for stage in ("valid", "test"):
        folder = own.data_dir / f"replay-sessions-{stage}-s2-g1440-{llm.client.model}"  # per model
        memory = Memory.open(own.model_copy(update={"data_dir": folder, "chroma_path": folder / "chroma"}), {}, None)
        for user in first_users(splits, USERS):
            start = splits[user].target_session(stage)[0].timestamp
            events = await memory.events.history(user)
            assert events and max(e.timestamp for e in events) < start
            history = await memory.history(user)
            assert 1 <= len(history) <= 2 and history[0].version == 1

    calls = llm.client.usage.calls
    again = await run_session_study(own, dataset, llm, **run)
    assert llm.client.usage.calls == calls  # memories persisted, rankings recorded: nothing to ask
    assert [s.metrics for s in again["test"].systems] == [s.metrics for s in test.systems]
