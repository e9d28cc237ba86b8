"""With nothing to re-order the pool (no LLM ranking, no genre pushed back), fusion builds only its first
k + 10 candidates, a prefix of the whole pool in the same order: every answer is the one the whole pool gives
(real MovieLens histories, real Chroma, the shipped embedder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from driftrec.agent import Recommender, recommender
from driftrec.config import Settings
from driftrec.models import RecommendationList
from tests.conftest import copy_of

REQUESTS: list[tuple[int, dict[str, Any]]] = [(10, {}), (3, {"query": "a comedy from the 90s"}), (25, {})]


def comparable(answer: RecommendationList) -> dict[str, Any]:
    return answer.model_dump(exclude={"seconds", "candidates"})


@pytest.mark.parametrize("slack", [recommender.POOL_SLACK, 0])
async def test_an_answer_from_the_pools_first_candidates_is_the_whole_pools_answer(
    settings: Settings, seeded_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slack: int
) -> None:
    """Slack 0: the prefix is exactly k, so any title the filter drops sends the request to the whole pool."""
    monkeypatch.setattr(recommender, "POOL_SLACK", slack)
    data = copy_of(seeded_data, tmp_path / "data")
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "ranking_answer_cache_s": 0.0})
    async with Recommender(own, llm=None) as rec:
        assert rec.reranker is not None and not rec.reranker.reorders()
        users = [str(u) for u in range(1, 101, 3)]
        short = {(u, k): await rec.recommend(u, k, **options) for u in users for k, options in REQUESTS}
        excluded = {u: await rec.recommend(u, 10, exclude=[short[u, 10].items[0].item.id]) for u in users}
        rec.reranker.reorders = lambda: True  # type: ignore[method-assign] # as when an LLM ranks: the whole pool
        whole = {(u, k): await rec.recommend(u, k, **options) for u in users for k, options in REQUESTS}
        whole_excluded = {u: await rec.recommend(u, 10, exclude=[short[u, 10].items[0].item.id]) for u in users}
    for key, answer in short.items():
        assert comparable(answer) == comparable(whole[key]), key
        assert len(answer.items) == key[1] and not answer.degraded
    for user, answer in excluded.items():
        assert comparable(answer) == comparable(whole_excluded[user]), user
    # what fusion built: k + slack (fewer after the title filter), or the whole pool when that fell short of k
    for (user, k), answer in short.items():
        pool = whole[user, k].candidates
        assert answer.candidates <= k + slack < pool or answer.candidates == pool
