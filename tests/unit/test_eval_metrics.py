"""Metric values on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftrec.eval.metrics import (
    accuracy,
    bootstrap_ci,
    coverage,
    intra_list_diversity,
    per_user,
    popularity_bias,
    significance,
)

TARGETS = {"u1": "a", "u2": "b", "u3": "c"}
RANKINGS = {"u1": ["a", "x", "y"], "u2": ["x", "y", "b"], "u3": ["x", "y", "z"]}


def test_hit_rate_mrr_ndcg_by_hand() -> None:
    m = accuracy(TARGETS, RANKINGS, ["hit_rate@1", "hit_rate@3", "mrr@3", "ndcg@3", "precision@3", "recall@3"])
    assert m["hit_rate@1"] == pytest.approx(1 / 3)  # only u1 has the target first
    assert m["hit_rate@3"] == pytest.approx(2 / 3)  # u1 and u2
    assert m["mrr@3"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4) + 0) / 3)  # one relevant item: DCG / 1
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)


def test_per_user_values_and_their_mean_agree() -> None:
    values = per_user(TARGETS, RANKINGS, "ndcg@3")
    assert values.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert values.mean() == pytest.approx(accuracy(TARGETS, RANKINGS, ["ndcg@3"])["ndcg@3"])


def test_bootstrap_interval_brackets_the_mean() -> None:
    values = np.array([0.0, 1.0] * 50)
    lo, hi = bootstrap_ci(values)
    assert lo < 0.5 < hi
    assert hi - lo < 0.3


def test_beyond_accuracy_measures() -> None:
    assert coverage(RANKINGS, catalog_size=10, k=3) == pytest.approx(5 / 10)  # a, b, x, y, z
    genres = {"a": ["Drama"], "x": ["Drama"], "y": ["Comedy"], "b": ["Drama"], "z": ["Comedy"]}
    # u1: (a,x)=0, (a,y)=1, (x,y)=1 -> 2/3; u2: (x,y)=1, (x,b)=0, (y,b)=1 -> 2/3; u3: (x,y)=1, (x,z)=1, (y,z)=0 -> 2/3
    assert intra_list_diversity(RANKINGS, genres, k=3) == pytest.approx(2 / 3)
    assert popularity_bias({"u": ["a", "b"]}, {"a": 0, "b": math.e - 1}, k=2) == pytest.approx(0.5)


def test_paired_significance_prefers_the_better_system() -> None:
    targets = {f"u{i}": "t" for i in range(60)}
    good = {u: ["t", "x"] for u in targets}
    bad = {u: (["x", "t"] if i % 3 else ["x", "y"]) for i, u in enumerate(targets)}
    p = significance(targets, {"good": good, "bad": bad}, "ndcg@2")
    assert p["good"]["bad"] < 0.01


def test_several_relevant_items_per_user_by_hand() -> None:
    """Session replay scores a ranking against every new item of the next session."""
    targets = {"u1": ["a", "b"], "u2": ["c"]}
    rankings = {"u1": ["x", "a", "y", "b"], "u2": ["c", "x"]}
    m = accuracy(targets, rankings, ["recall@2", "recall@4", "precision@2", "ndcg@4", "map@4", "mrr@4"])
    assert m["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # a at rank 2, b at rank 4
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg@4"] == pytest.approx((dcg / ideal + 1) / 2)
    assert m["map@4"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1) / 2)
    assert m["mrr@4"] == pytest.approx((1 / 2 + 1) / 2)
