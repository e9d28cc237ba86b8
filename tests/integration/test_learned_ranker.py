"""The learned ranking stage end to end on real MovieLens events (the seeded store: 100 users), no LLM:
trained from the event store, saved, loaded at start, used by recommend(); a file made for another
catalog or other features, or a broken one, is refused at load and every answer says why it fell back.
How good it is, is the harness's question (`driftrec eval ranker`, docs/results.md)."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.models import Filters
from driftrec.ranking.features import FEATURES, SOURCES
from driftrec.ranking.learned import LearnedRanker, RankerFileError, catalog_fingerprint
from driftrec.ranking.training import candidate_pool
from driftrec.retrieval import RetrievalRequest
from tests.conftest import SEED_USERS, copy_of


@pytest.fixture(scope="module")
async def trained(
    settings: Settings, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Recommender]:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("learned"))
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
    async with Recommender(own, llm=None) as rec:
        assert rec.learned is None and rec.learned_error is None  # no file yet: fusion, not degraded
        await rec.train_ranker(stages=2, pool=50)
        yield rec


async def test_a_ranker_trained_on_the_store_is_saved_and_orders_recommendations(trained: Recommender) -> None:
    card = json.loads((trained.ranker_dir() / "ranker.json").read_text())
    assert card["features"] == list(FEATURES) and card["pool"] == 50 and card["stages"] == 2
    assert card["users"] >= 100 and 0 < card["valid_ndcg10"] <= 1 and len(card["grid"]) >= 2
    assert abs(sum(card["importance"].values()) - 1) < 0.01
    assert trained.memory is not None
    for user in SEED_USERS[:5]:
        seen = {e.item for e in await trained.memory.events.history(user)}
        answer = await trained.recommend(user, k=10)
        ids = [r.item.id for r in answer.items]
        assert answer.order == "learned" and not answer.degraded
        assert len(ids) == 10 and len(set(ids)) == 10 and not set(ids) & seen


async def test_the_pool_holds_every_sources_picks_under_the_same_rules(trained: Recommender) -> None:
    """ALS and item-KNN join retrieval's sources in the ranker's pool: each list named in the provenance,
    never a consumed item, every filter honoured."""
    assert trained.memory is not None and trained.generator is not None and trained.features is not None
    user = SEED_USERS[1]
    history = await trained.memory.events.history(user)
    filters = Filters(genres=["Drama", "Comedy"], exclude_genres=["Horror"])
    request = RetrievalRequest(user=user, history=history, now=history[-1].timestamp, filters=filters)
    pool = await candidate_pool(trained.generator, request, 30, trained.features)
    found = {p.source for c in pool for p in c.provenance}
    assert found == set(SOURCES) - {"vector"} or found == set(SOURCES)  # vector may have nothing after filters
    assert {"transition", "als", "knn"} <= found
    ids = [c.item.id for c in pool]
    assert len(ids) == len(set(ids)) and not set(ids) & {e.item for e in history}
    assert all(filters.matches(c.item) for c in pool)
    for source in ("als", "knn"):
        ranks = sorted(p.rank for c in pool for p in c.provenance if p.source == source)
        assert ranks == list(range(1, 31))  # a whole top 30 each


async def test_the_saved_ranker_is_loaded_at_start(trained: Recommender) -> None:
    async with Recommender(trained.settings, llm=None) as again:
        assert again.learned is not None and again.learned.card.trained_at == trained.learned.card.trained_at
        answer = await again.recommend(SEED_USERS[0], k=5)
        assert answer.order == "learned"


def test_a_ranker_for_another_catalog_or_other_features_is_refused(trained: Recommender, tmp_path: Path) -> None:
    copy = tmp_path / "ranker"
    shutil.copytree(trained.ranker_dir(), copy)
    right = catalog_fingerprint(trained.catalog)
    assert LearnedRanker.load(copy, right).card.features == list(FEATURES)
    with pytest.raises(RankerFileError, match="another catalog"):
        LearnedRanker.load(copy, "0123456789abcdef")
    card = json.loads((copy / "ranker.json").read_text())
    (copy / "ranker.json").write_text(json.dumps(card | {"features": [*card["features"][:-1], "sasrec_score"]}))
    with pytest.raises(RankerFileError, match="sasrec_score"):
        LearnedRanker.load(copy, right)
    (copy / "ranker.json").write_text(json.dumps(card))
    (copy / "ranker.txt").write_text("not a model")
    with pytest.raises(RankerFileError, match="not a LightGBM model"):
        LearnedRanker.load(copy, right)
    with pytest.raises(RankerFileError, match="no ranker"):
        LearnedRanker.load(tmp_path / "nothing", right)


async def test_an_unusable_ranker_file_degrades_answers_to_fusion_and_says_why(
    trained: Recommender, settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    shutil.copytree(trained.ranker_dir(), data / "ranker")
    card = json.loads((data / "ranker" / "ranker.json").read_text())
    (data / "ranker" / "ranker.json").write_text(json.dumps(card | {"catalog": "0123456789abcdef"}))
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
    async with Recommender(own, llm=None) as rec:
        answer = await rec.recommend(SEED_USERS[0], k=10)
    assert answer.order == "fusion" and answer.degraded and len(answer.items) == 10
    assert answer.error and answer.error.startswith("RankerFileError") and "another catalog" in answer.error
