"""The LLM as a ranker feature: how its label logprobs become columns, and how the second phase is kept
honest (cross-fitted over users, with a without-LLM twin so what the LLM adds is separated from what a
second phase alone does). The LLM here is simulated by numbers; the real study runs against vLLM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftrec.eval.llm_feature import cross_fitted, measure
from driftrec.ranking.second_phase import COLUMNS, LLMScores, normalized, window_rows


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
