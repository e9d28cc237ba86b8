"""Ranking metrics via ranx, plus the beyond-accuracy measures ranx does not have.

A metric registry in the RecBole sense: names like ``ndcg@10`` are ranx's own, so any ranx metric can
be asked for by name. Runs hold each user's top-k list with scores; qrels the held-out item(s).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from ranx import Qrels, Run, compare, evaluate

CUTOFFS = (1, 5, 10, 20)
ACCURACY = ("ndcg", "recall", "hit_rate", "mrr", "precision", "map")
DEFAULT_METRICS = [f"{m}@{k}" for m in ACCURACY for k in CUTOFFS]

Ranking = Mapping[str, Sequence[str]]  # user -> best-first item ids


def to_qrels(targets: Mapping[str, str | Sequence[str]]) -> Qrels:
    return Qrels({u: ({t: 1} if isinstance(t, str) else dict.fromkeys(t, 1)) for u, t in targets.items()})


def to_run(rankings: Ranking, name: str) -> Run:
    """Scores are rank-derived (n, n-1, ...) so ranx orders exactly as the ranking does."""
    return Run(
        {
            u: {item: float(len(items) - r) for r, item in enumerate(items)} or {"<none>": 0.0}
            for u, items in rankings.items()
        },
        name=name,
    )


def accuracy(
    targets: Mapping[str, str | Sequence[str]], rankings: Ranking, metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, float]:
    result = evaluate(to_qrels(targets), to_run(rankings, "run"), list(metrics))
    return {m: float(result[m]) for m in metrics} if isinstance(result, dict) else {metrics[0]: float(result)}


def per_user(targets: Mapping[str, str | Sequence[str]], rankings: Ranking, metric: str) -> np.ndarray:
    """One value per user (in ``targets`` order), for confidence intervals and paired tests."""
    qrels, run = to_qrels(targets), to_run({u: rankings.get(u, []) for u in targets}, "run")
    return np.asarray(evaluate(qrels, run, metric, return_mean=False), dtype=float)


def bootstrap_ci(values: np.ndarray, *, samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(samples, len(values)), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def significance(
    targets: Mapping[str, str | Sequence[str]],
    systems: Mapping[str, Ranking],
    metric: str = "ndcg@10",
    stat_test: str = "student",
) -> dict[str, dict[str, float]]:
    """Paired test of every pair of systems on ``metric``: {a: {b: p-value}} (ranx's compare)."""
    qrels = to_qrels(targets)
    runs = [to_run({u: r.get(u, []) for u in targets}, name) for name, r in systems.items()]
    report = compare(qrels, runs, metrics=[metric], stat_test=stat_test, make_comparable=True)
    table = report.to_dict()
    return {a: {b: float(table[a]["comparisons"][b][metric]) for b in systems if b != a} for a in systems}


def coverage(rankings: Ranking, catalog_size: int, k: int = 10) -> float:
    """Share of the catalog that appears in anyone's top-k."""
    shown = {item for items in rankings.values() for item in items[:k]}
    return len(shown) / catalog_size if catalog_size else 0.0


def intra_list_diversity(rankings: Ranking, genres: Mapping[str, Sequence[str]], k: int = 10) -> float:
    """Mean pairwise genre-Jaccard distance inside each top-k list, averaged over users."""
    values = []
    for items in rankings.values():
        top = [set(genres.get(i, ())) for i in items[:k]]
        pairs = [(a, b) for a, b in itertools.combinations(top, 2) if a or b]
        if pairs:
            values.append(sum(1 - len(a & b) / len(a | b) for a, b in pairs) / len(pairs))
    return float(np.mean(values)) if values else 0.0


def popularity_bias(rankings: Ranking, popularity: Mapping[str, int], k: int = 10) -> float:
    """Mean log(1 + training interactions) of recommended items: higher means more mainstream."""
    values = [math.log1p(popularity.get(i, 0)) for items in rankings.values() for i in items[:k]]
    return float(np.mean(values)) if values else 0.0
