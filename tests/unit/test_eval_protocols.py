"""Leave-one-out by time on real MovieLens-100K: no target leaks into what the system may see."""

from __future__ import annotations

from datetime import timedelta

import pytest

from driftrec.config import Settings
from driftrec.data import Dataset, load_movielens_100k
from driftrec.eval.baselines import BASELINES, ItemKNN, MostPopular, RandomRanker, TrainData
from driftrec.eval.protocols import leave_one_out, session_replay, session_training_log, training_log


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


def test_every_user_is_split_last_two_in_time(ml100k: Dataset) -> None:
    splits = leave_one_out(ml100k)
    assert len(splits) == 943
    for split in splits.values():
        assert all(e.timestamp <= split.valid.timestamp for e in split.history)
        assert split.valid.timestamp <= split.test.timestamp
        assert split.seen_before("test") == [*split.history, split.valid]


def test_no_target_leaks_into_training(ml100k: Dataset) -> None:
    splits = leave_one_out(ml100k)
    test_log = {e.event_id for e in training_log(splits, "test")}
    valid_log = {e.event_id for e in training_log(splits, "valid")}
    assert not test_log & {s.test.event_id for s in splits.values()}
    assert not valid_log & ({s.valid.event_id for s in splits.values()} | {s.test.event_id for s in splits.values()})
    assert len(test_log) == 100_000 - 943 and len(valid_log) == 100_000 - 2 * 943


def _data(ml100k: Dataset, stage: str) -> tuple[TrainData, dict]:
    splits = leave_one_out(ml100k)
    sequences: dict = {}
    for event in training_log(splits, stage):
        sequences.setdefault(event.user, []).append(event)
    return TrainData(list(ml100k.items), sequences), splits


def test_baselines_never_recommend_seen_items(ml100k: Dataset) -> None:
    data, splits = _data(ml100k, "valid")
    for ranker in (RandomRanker().fit(data), MostPopular().fit(data), ItemKNN().fit(data)):
        for user in ("1", "2", "500"):
            seen = [e.item for e in splits[user].seen_before("valid")]
            recs = ranker.recommend(user, seen, 20, data.catalog)
            assert len(recs) == 20 and len(set(recs)) == 20
            assert not set(recs) & set(seen), ranker.name


def test_most_popular_ranks_by_training_counts(ml100k: Dataset) -> None:
    data, _ = _data(ml100k, "test")
    counts: dict[str, int] = {}
    for events in data.sequences.values():
        for event in events:
            counts[event.item] = counts.get(event.item, 0) + 1
    top = MostPopular().fit(data).recommend("new", [], 5, data.catalog)
    assert top == sorted(data.catalog, key=lambda i: -counts.get(i, 0))[:5]  # ties: catalog order
    assert top[0] == "50"  # Star Wars (1977), the most-rated film in MovieLens-100K


def test_item_knn_scores_neighbours_of_the_history(ml100k: Dataset) -> None:
    data, _ = _data(ml100k, "test")
    knn = ItemKNN(k=20).fit(data)
    scores = knn.score("x", ["172"])  # The Empire Strikes Back
    best = data.catalog[int(scores.argmax())]
    assert best in {"50", "181", "174"}  # Star Wars, Return of the Jedi, Raiders of the Lost Ark
    assert (knn.sim > 0).sum(axis=1).max() <= 20


def test_registry_names_match() -> None:
    assert {name: cls.name for name, cls in BASELINES.items()} == {n: n for n in BASELINES}


def test_session_replay_cuts_whole_sessions_in_time_order(ml100k: Dataset) -> None:
    splits = session_replay(ml100k, gap_minutes=1440)
    assert 150 < len(splits) < 943  # most MovieLens users rate in one day-long burst
    gap = timedelta(days=1)
    for split in splits.values():
        assert len(split.sessions) >= 3
        for before, after in zip(split.sessions, split.sessions[1:], strict=False):
            assert after[0].timestamp - before[-1].timestamp > gap  # a real break between sessions
        valid, test = split.target_session("valid"), split.target_session("test")
        assert all(e.timestamp < valid[0].timestamp for e in split.seen_before("valid"))
        assert all(e.timestamp < test[0].timestamp for e in split.seen_before("test"))
        assert split.seen_before("test") == [*split.seen_before("valid"), *valid]


def test_session_replay_targets_are_new_items_and_never_in_training(ml100k: Dataset) -> None:
    splits = session_replay(ml100k, gap_minutes=1440)
    for stage in ("valid", "test"):
        log = session_training_log(ml100k, splits, stage)
        logged = {e.event_id for e in log}
        for split in splits.values():
            targets = split.targets(stage)
            assert targets and not set(targets) & {e.item for e in split.seen_before(stage)}
            assert not logged & {e.event_id for e in split.target_session(stage)}  # no target leaks
            if stage == "valid":  # validation never sees the test session either
                assert not logged & {e.event_id for e in split.target_session("test")}
        others = sum(1 for e in ml100k.interactions if e.user not in splits)
        assert len(log) == others + sum(len(s.seen_before(stage)) for s in splits.values())
