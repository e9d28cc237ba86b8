"""Rank fusion of candidate lists.

Reciprocal-rank fusion, score(d) = sum_s w_s / (k + rank_s(d)), as in Cormack et al. (2009) and ranx's
``rrf``. It is computed here (per request, on a few hundred items, where building ranx Run objects
would cost more than the fusion), and a test checks it against ranx's implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter


def rrf(
    rankings: Mapping[str, Sequence[str]], *, k: int = 60, weights: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """Fuse best-first item lists; ties are broken by first appearance (source order, then rank)."""
    scores: dict[str, float] = {}
    get = scores.get
    for source, ranking in rankings.items():
        weight = 1.0 if weights is None else weights.get(source, 1.0)
        if weight == 0:
            continue
        for rank, item in enumerate(ranking, start=k + 1):
            scores[item] = get(item, 0.0) + weight / rank
    return sorted(scores.items(), key=itemgetter(1), reverse=True)  # a stable sort: ties keep first appearance
