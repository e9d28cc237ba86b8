"""The LLM as a ranker feature: how its label logprobs become columns, and how the second phase is kept
honest (cross-fitted over users, with a without-LLM twin so what the LLM adds is separated from what a
second phase alone does). The LLM here is simulated by numbers; the real study runs against vLLM."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftrec.eval.llm_feature import STUDY_COLUMNS, cross_fitted, measure, profile_document, study_rows
from driftrec.models import Interaction, Item
from driftrec.ranking.second_phase import COLUMNS, PROFILE_COLUMNS, LLMScores, normalized, window_rows


def test_label_logprobs_become_probabilities_among_the_window() -> None:
    out = normalized({"a": -1.0, "b": -2.0, "c": float("-inf")})
    assert set(out) == {"a", "b"}  # a label with no finite logprob is missing, not a number
    assert math.fsum(math.exp(v) for v in out.values()) == pytest.approx(1.0)
    assert out["a"] - out["b"] == pytest.approx(1.0)  # the differences are the model's own
    assert normalized({}) == {}


def test_window_rows_follow_the_shown_order_and_mark_what_the_llm_did_not_score() -> None:
    record = LLMScores("u", ["x", "y", "z"], {"y": -0.1, "x": -2.5}, ["y", "x", "z"])
    rows = window_rows(record, {"x": 0.9, "y": 0.5, "z": 0.1})
    assert rows.shape == (3, len(COLUMNS))
    assert rows[:, COLUMNS.index("learned_rank")].tolist() == [1, 2, 3]
    assert rows[:, COLUMNS.index("llm_rank")].tolist() == [2, 1, 3]
    assert math.isnan(rows[2, COLUMNS.index("llm_logprob")])


def simulated(users: int, informative: bool, seed: int = 0) -> tuple[dict, dict, dict, dict]:
    """Windows of 10 where the target sits at a random place of the learned order; an informative LLM
    gives the target most of its probability, an uninformative one is noise."""
    rng = np.random.default_rng(seed)
    records, learned, scores, targets = {}, {}, {}, {}
    for n in range(users):
        user = f"u{n}"
        shown = [f"{user}-{i}" for i in range(10)]
        target = shown[int(rng.integers(10))]
        raw = {i: float(rng.normal()) + (3.0 if informative and i == target else 0.0) for i in shown}
        logprobs = normalized(raw)
        records[user] = LLMScores(user, shown, logprobs, sorted(shown, key=lambda i: -logprobs[i]))
        learned[user] = [*shown, f"{user}-rest"]
        scores[user] = {i: 1.0 - k / 10 for k, i in enumerate(shown)}
        targets[user] = target
    return records, learned, scores, targets


def test_an_informative_llm_column_is_learned_and_measured() -> None:
    records, learned, scores, targets = simulated(400, informative=True)
    study = measure(records, learned, scores, targets, window=10, model="simulated")
    assert study.ndcg["second phase with LLM columns"] > study.ndcg["second phase without LLM columns"] + 0.2
    assert study.tests["with LLM columns vs without"]["p_value"] < 0.001
    assert study.importance["llm_logprob"] + study.importance["llm_rank"] > 0.5
    assert len(study.iterations["with LLM"]) == 5
    assert set(study.ndcg) == {  # no profile calls: the four orders, and serving's columns only
        "driftrec-learned",
        "LLM order of the window",
        "second phase without LLM columns",
        "second phase with LLM columns",
    }
    assert set(study.importance) == set(COLUMNS) and study.profile_latency == {}


def ndcg10(orders: dict[str, list[str]], targets: dict[str, str]) -> float:
    return float(np.mean([1 / math.log2(orders[u].index(t) + 2) for u, t in targets.items()]))


def test_noise_from_the_llm_buys_nothing_beyond_chance() -> None:
    records, _, scores, targets = simulated(400, informative=False, seed=1)
    with_llm, _, _ = cross_fitted(records, scores, targets, COLUMNS)
    without_llm, _, _ = cross_fitted(records, scores, targets, COLUMNS[:2])
    assert abs(ndcg10(with_llm, targets) - ndcg10(without_llm, targets)) < 0.05


def test_every_user_is_ordered_once_and_only_within_their_window() -> None:
    records, _, scores, targets = simulated(100, informative=True, seed=2)
    orders, iterations, importance = cross_fitted(records, scores, targets, COLUMNS)
    assert sorted(orders) == sorted(records)
    assert all(sorted(orders[u]) == sorted(records[u].shown) for u in records)
    assert len(iterations) == 5 and set(importance) == set(COLUMNS)


def with_profile_calls(records: dict, targets: dict, informative: bool, seed: int) -> dict:
    """The same windows judged a second time (from the profile): informative or noise."""
    rng = np.random.default_rng(seed)
    profiles = {}
    for user, record in records.items():
        raw = {i: float(rng.normal()) + (3.0 if informative and i == targets[user] else 0.0) for i in record.shown}
        logprobs = normalized(raw)
        profiles[user] = LLMScores(user, record.shown, logprobs, sorted(record.shown, key=lambda i: -logprobs[i]))
    return profiles


def test_an_informative_profile_judgement_is_measured_beside_an_uninformative_llm() -> None:
    records, learned, scores, targets = simulated(200, informative=False, seed=3)
    profiles = with_profile_calls(records, targets, informative=True, seed=4)
    study = measure(records, learned, scores, targets, window=10, model="simulated", profiles=profiles)
    assert study.ndcg["second phase with profile columns"] > study.ndcg["second phase without LLM columns"] + 0.2
    assert study.tests["with profile columns vs without"]["p_value"] < 0.001
    assert study.tests["with LLM and profile columns vs LLM columns"]["p_value"] < 0.001
    assert study.importance["profile_logprob"] + study.importance["profile_rank"] > 0.5
    assert set(study.iterations) == {"without LLM", "with LLM", "with profile", "with LLM and profile"}
    assert "LLM order of the window from the profile" in study.ndcg


def test_study_rows_put_the_profile_columns_after_serving_ones() -> None:
    record = LLMScores("u", ["x", "y"], {"x": -0.2, "y": -1.8}, ["x", "y"])
    judged = LLMScores("u", ["x", "y"], {"y": -0.1}, ["y", "x"])
    rows = study_rows(record, {"x": 0.9, "y": 0.5}, judged)
    assert (*COLUMNS, *PROFILE_COLUMNS) == STUDY_COLUMNS and rows.shape == (2, len(STUDY_COLUMNS))
    assert rows[:, : len(COLUMNS)].tolist() == window_rows(record, {"x": 0.9, "y": 0.5}).tolist()
    assert rows[:, STUDY_COLUMNS.index("profile_rank")].tolist() == [2, 1]
    assert math.isnan(rows[0, STUDY_COLUMNS.index("profile_logprob")])
    assert np.isnan(study_rows(record, {"x": 0.9, "y": 0.5}, None)[:, len(COLUMNS) :]).all()


def test_the_profile_document_names_only_what_the_users_own_events_back() -> None:
    catalog = {
        "a": Item(id="a", title="A", genres=("Drama", "Romance")),
        "b": Item(id="b", title="B", genres=("Drama",)),
        "c": Item(id="c", title="C", genres=("Horror",)),
        "d": Item(id="d", title="D", genres=("Comedy",)),
        "e": Item(id="e", title="E", genres=("Western",)),
    }
    start = datetime(2020, 1, 1, tzinfo=UTC)
    ratings = [("a", 5), ("b", 4), ("b", 2), ("c", 1), ("c", 2), ("d", 3), ("e", 5)]
    history = [
        Interaction(user="u", item=i, rating=r, timestamp=start + timedelta(hours=n))
        for n, (i, r) in enumerate(ratings)
    ]
    text = profile_document(history, catalog)
    assert text.splitlines()[0] == "Long-term interests:"
    assert "- Drama (weight 1.00; 2 liked, 1 disliked)" in text  # the top genre: weight 1
    assert "- Romance (weight 0.50; 1 liked, 0 disliked)" in text
    assert "Dislikes: Horror (weight 1.00; 0 liked, 2 disliked)" in text
    assert "Comedy" not in text  # a 3 of 5 is neither liked nor disliked: no claim
    named = set(re.findall(r"([A-Z][a-z]+) \(weight", text))
    rated = {g for e in history for g in catalog[e.item].genres}
    assert named <= rated  # every claim is a genre of the user's own rated items
    assert profile_document([], catalog) == "Long-term interests: (none)"
