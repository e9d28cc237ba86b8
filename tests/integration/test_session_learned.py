"""The learned ranking stage under session replay, on real MovieLens-100K: it trains on earlier sessions
only (each example: a session's new items given everything before it), never on a stage's target session,
and its lists are valid recommendations scored beside the other systems."""

from __future__ import annotations

import json
from pathlib import Path

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.protocols import first_users, session_replay, session_training_log
from driftrec.eval.retrieval_study import ingest
from driftrec.eval.session_learned import LEARNED, K, learned_rankings, session_cut, sessions_known
from driftrec.eval.session_study import _case, run_session_study

USERS = 30


def test_training_sessions_stop_before_the_stage_target() -> None:
    dataset = load_movielens_100k(Settings().cache_dir)
    splits = session_replay(dataset)
    for stage in ("valid", "test"):
        sessions, single = sessions_known(dataset, splits, stage, 1440.0)
        for user, split in splits.items():
            target_start = split.target_session(stage)[0].timestamp
            known = [e for s in sessions.get(user, []) for e in s] + [e for e in single if e.user == user]
            assert known and max(e.timestamp for e in known) < target_start
        for back in range(3):
            cases, log = session_cut(sessions, single, back)
            assert cases  # every cut has examples
            latest: dict[str, float] = {}
            for e in log:
                latest[e.user] = max(latest.get(e.user, 0.0), e.timestamp.timestamp())
            for user, (history, target) in cases.items():
                assert target.items and not target.items & {e.item for e in history}  # new items only
                assert all(e.timestamp < target.at for e in history)
                # nothing of the user's own session or later is in the log its features are fitted on
                assert latest[user] < target.at.timestamp()


async def test_learned_lists_are_valid_recommendations(settings: Settings, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    own = settings.model_copy(update={"data_dir": tmp_path / "data", "chroma_path": tmp_path / "data" / "chroma"})
    splits = session_replay(dataset)
    users = first_users(splits, USERS)
    cases = {u: _case(splits[u], "test") for u in users}
    index = await ingest(own, dataset)
    log = session_training_log(dataset, splits, "test")
    ranked, info = await learned_rankings(own, dataset, index, splits, cases, log, "test", 1440.0)
    assert set(ranked) == set(users) and info["examples"] > USERS
    for user, items in ranked.items():
        seen = {e.item for e in cases[user].history}
        assert len(items) == K == len(set(items)) and not seen & set(items) and set(items) <= set(dataset.items)


async def test_session_study_reports_the_learned_stage(settings: Settings, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    own = settings.model_copy(update={"data_dir": tmp_path / "data", "chroma_path": tmp_path / "data" / "chroma"})
    studies = await run_session_study(
        own, dataset, None, users=USERS, baselines=("most-popular",), alphas=(0.5,), out_dir=tmp_path
    )
    for study in studies.values():
        assert study.learned["examples"] > USERS  # every user with two sessions or more gives examples
        assert 0 < study.learned["pool_recall@100"] <= 1
        row = next(s for s in study.systems if s.name == LEARNED)
        assert row.group == "ranking" and 0 < row.metrics["ndcg@10"] <= 1
    # the report names it with its training
    assert LEARNED in (tmp_path / "sessions.md").read_text()
    report = json.loads((tmp_path / "sessions.json").read_text())
    assert report["test"]["learned"]["params"]["objective"] == "lambdarank"
    assert studies["test"].users == USERS
