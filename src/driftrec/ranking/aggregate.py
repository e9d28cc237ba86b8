"""Aggregate several rankings: Borda count over shuffles, weighted fusion with the retrieval order."""

from __future__ import annotations

import random
from collections.abc import Sequence

from driftrec.retrieval.fusion import rrf


def shuffles(items: Sequence[str], rounds: int, seed: str) -> list[list[str]]:
    """Round 0 is the retrieval order; later rounds are seeded permutations (position-bias control)."""
    orders = [list(items)]
    rng = random.Random(seed)
    for _ in range(1, rounds):
        order = list(items)
        rng.shuffle(order)
        orders.append(order)
    return orders


def borda(rankings: Sequence[Sequence[str]], universe: Sequence[str]) -> list[str]:
    """Items by total Borda points (n - position in each ranking; unranked items get 0); ties keep
    ``universe`` order, which is the retrieval order."""
    n = len(universe)
    points = dict.fromkeys(universe, 0.0)
    for ranking in rankings:
        for position, item in enumerate(ranking):
            if item in points:
                points[item] += n - position
    order = {item: i for i, item in enumerate(universe)}
    return sorted(universe, key=lambda item: (-points[item], order[item]))


def fuse_with_retrieval(
    llm_order: Sequence[str], retrieval_order: Sequence[str], llm_weight: float, *, rrf_k: int = 60
) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion of the two orders; weight 1 is the LLM's order, 0 retrieval's."""
    fused = rrf(
        {"llm": llm_order, "retrieval": retrieval_order},
        k=rrf_k,
        weights={"llm": llm_weight, "retrieval": 1.0 - llm_weight},
    )
    ranked = {item for item, _ in fused}
    tail = [(item, 0.0) for item in retrieval_order if item not in ranked]
    return fused + tail
