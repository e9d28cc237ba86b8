"""The candidate indexes fit from columns and take new events in incrementally, with the same result as
fitting everything again — on real MovieLens-100K.

A serving process sees events other processes wrote (it polls the log position), and forgetting a user
takes their events out of co-occurrence and popularity."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.data import Dataset, load_movielens_100k
from driftrec.models import Interaction
from driftrec.retrieval.log import EventColumns, UserCodes
from driftrec.retrieval.sources import CoOccurrenceIndex, PopularityIndex, TransitionIndex
from tests.conftest import copy_of, on_backend


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


def reference_counts(events: list[Interaction], ids: list[str], window: int) -> sparse.csr_matrix:
    """The definition, one pair at a time: items at most ``window`` apart in a user's time-ordered sequence."""
    position = {item: i for i, item in enumerate(ids)}
    by_user: dict[str, list[int]] = {}
    for e in sorted(events, key=lambda e: e.timestamp):
        by_user.setdefault(e.user, []).append(position[e.item])
    rows, cols = [], []
    for sequence in by_user.values():
        for i, a in enumerate(sequence):
            for b in sequence[i + 1 : i + 1 + window]:
                if a != b:
                    rows += (a, b)
                    cols += (b, a)
    n = len(ids)
    counts = sparse.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)).tocsr()
    counts.sum_duplicates()
    return counts


def reference_steps(
    events: list[Interaction], ids: list[str], window: int, step_decay: float, backward: float
) -> sparse.csr_matrix:
    """The transitions' definition, one pair at a time: b d steps after a adds step_decay^(d-1) to (a, b)
    and backward times that to (b, a)."""
    position = {item: i for i, item in enumerate(ids)}
    by_user: dict[str, list[int]] = {}
    for e in sorted(events, key=lambda e: e.timestamp):
        by_user.setdefault(e.user, []).append(position[e.item])
    rows, cols, values = [], [], []
    for sequence in by_user.values():
        for i, a in enumerate(sequence):
            for d, b in enumerate(sequence[i + 1 : i + 1 + window], start=1):
                if a != b:
                    rows += (a, b)
                    cols += (b, a)
                    values += (step_decay ** (d - 1), backward * step_decay ** (d - 1))
    n = len(ids)
    counts = sparse.coo_matrix((np.array(values, np.float64), (rows, cols)), shape=(n, n)).tocsr()
    counts.sum_duplicates()
    return counts


def test_the_vectorized_fit_counts_exactly_the_defined_pairs(ml100k: Dataset) -> None:
    ids = list(ml100k.items)
    events = sorted(ml100k.interactions, key=lambda e: e.timestamp)
    index = CoOccurrenceIndex(window=10).fit_columns(
        EventColumns.from_interactions(events, {i: n for n, i in enumerate(ids)}, codes := UserCodes()), ids, len(codes)
    )
    assert abs(index.base - reference_counts(events, ids, 10)).max() == 0
    assert index.base.nnz > 500_000  # a real log, not a toy


def test_the_transition_fit_weighs_exactly_the_defined_steps(ml100k: Dataset) -> None:
    ids = list(ml100k.items)
    events = sorted(ml100k.interactions, key=lambda e: e.timestamp)
    index = TransitionIndex(window=10, step_decay=0.8, backward=0.3).fit_columns(
        EventColumns.from_interactions(events, {i: n for n, i in enumerate(ids)}, codes := UserCodes()), ids, len(codes)
    )
    reference = reference_steps(events, ids, 10, 0.8, 0.3)
    assert index.base.nnz == reference.nnz > 500_000
    assert abs(index.base - reference).max() < 1e-3  # float32 sums of up to thousands of terms
    assert np.allclose(index.totals, np.asarray(reference.sum(axis=1)).ravel(), rtol=1e-5)


def test_updates_in_chunks_equal_one_fit_on_everything(ml100k: Dataset) -> None:
    ids = list(ml100k.items)
    positions = {i: n for n, i in enumerate(ids)}
    events = sorted(ml100k.interactions, key=lambda e: e.timestamp)
    codes = UserCodes()
    log = EventColumns.from_interactions(events, positions, codes)
    cut = len(events) * 8 // 10

    def part(lo: int, hi: int) -> EventColumns:
        return EventColumns(log.seq[lo:hi], log.users[lo:hi], log.items[lo:hi], log.times[lo:hi])

    cooc = CoOccurrenceIndex(window=10).fit_columns(part(0, cut), ids, len(codes))
    steps = TransitionIndex(window=10).fit_columns(part(0, cut), ids, len(codes))
    popularity = PopularityIndex(window_days=30).fit_columns(part(0, cut), ids)
    merges = 0
    for lo in range(cut, len(events), 2_000):  # ten chunks; the delta is merged into the base along the way
        before = cooc.base
        cooc.update(part(lo, lo + 2_000), len(codes))
        steps.update(part(lo, lo + 2_000), len(codes))
        popularity.update(part(lo, lo + 2_000))
        merges += cooc.base is not before
    whole = CoOccurrenceIndex(window=10).fit_columns(log, ids, len(codes))
    assert merges >= 1
    assert abs((cooc.base + cooc.delta) - whole.base).max() == 0
    assert np.array_equal(cooc.totals, whole.totals)
    history = [e.item for e in events if e.user == events[-1].user]
    assert np.allclose(cooc.scores(history), whole.scores(history))
    whole_steps = TransitionIndex(window=10).fit_columns(log, ids, len(codes))
    assert abs((steps.base + steps.delta) - whole_steps.base).max() < 1e-3
    assert np.allclose(steps.totals, whole_steps.totals, rtol=1e-5)
    assert np.allclose(steps.scores(history), whole_steps.scores(history), rtol=1e-4, atol=1e-7)
    later = events[-1].timestamp
    assert np.array_equal(popularity.counts(later), PopularityIndex(window_days=30).fit_columns(log, ids).counts(later))


async def test_a_process_sees_events_another_wrote_and_forgetting_removes_them(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "index_poll_s": 0.0})
    now = datetime(1998, 6, 1, tzinfo=UTC)
    burst = [  # a niche title suddenly clicked by twenty new users (ratings of seeded users end in April 1998)
        Interaction(user=f"fan{n}", item="1500", action="click", timestamp=now - timedelta(days=1, minutes=n))
        for n in range(20)
    ]
    async with Recommender(own, llm=None) as writer, Recommender(own, llm=None) as reader:
        item = reader.catalog["1500"]
        assert reader.generator is not None
        before = reader.generator.popularity.counts(now)[list(reader.catalog).index(item.id)]
        await writer.observe(burst, upkeep=False)  # starts the writer's own update in the background
        await writer.refit()  # racing it: the new events are still taken in once
        assert writer.generator is not None
        assert writer.generator.popularity.counts(now)[list(writer.catalog).index(item.id)] == before + 20
        await reader.recommend("newcomer", k=5, now=now)  # the poll notices the log moved
        await reader.refit()  # and the catch-up it started is done
        counts = reader.generator.popularity.counts(now)
        assert counts[list(reader.catalog).index(item.id)] == before + 20
        top = await reader.recommend("newcomer", k=5, now=now)
        assert top.items[0].item.id == "1500"  # the cold-start source follows the burst

        for n in range(20):
            await writer.forget_user(f"fan{n}")
        await writer.refit()
        assert writer.generator is not None
        assert writer.generator.popularity.counts(now)[list(writer.catalog).index(item.id)] == before
        await reader.recommend("newcomer", k=5, now=now)  # the poll sees the store's generation move
        await reader.refit()  # and the whole refit it started is done
        assert reader.generator.popularity.counts(now)[list(reader.catalog).index(item.id)] == before
        assert not any(user.startswith("fan") for user in reader._users.codes)


async def test_writes_close_together_are_taken_in_by_one_update(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    """A process's own writes start an update of its candidate indexes after ``index_catch_up_s``: the writes
    that come meanwhile are taken in by that one update (not one update each), and every one of them counts."""
    data = copy_of(seeded_data, tmp_path / "data")
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "index_catch_up_s": 0.5})
    now = datetime(1998, 6, 1, tzinfo=UTC)
    async with Recommender(own, llm=None) as rec:
        assert rec.generator is not None
        at = list(rec.catalog).index("1500")
        before, updates = rec.generator.popularity.counts(now)[at], rec.catch_ups
        for n in range(10):  # ten clicks, one request each
            click = Interaction(user=f"fan{n}", item="1500", action="click", timestamp=now - timedelta(minutes=n + 1))
            assert await rec.observe([click], upkeep=False) == 1
        assert rec.generator.popularity.counts(now)[at] == before  # not yet: the update waits for more writes
        assert rec._refit is not None
        await rec._refit
        assert rec.catch_ups == updates + 1
        assert rec.generator.popularity.counts(now)[at] == before + 10
        assert all(f"fan{n}" in rec._users.codes for n in range(10))


def snapshot_users(path: Path) -> set[str]:
    with np.load(path, allow_pickle=False) as arrays:
        return set(arrays["users"].tolist())


async def test_processes_start_from_one_saved_fit_and_forgetting_deletes_it(
    settings: Settings, seeded_data: Path, tmp_path: Path, database_url: str | None
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    shutil.rmtree(data / "indexes", ignore_errors=True)
    own = on_backend(
        settings.model_copy(
            update={
                "data_dir": data,
                "chroma_path": data / "chroma",
                "index_poll_s": 0.0,
                "index_snapshot_events": 100,
            }
        ),
        database_url,
        data,
    )
    now = datetime(1998, 6, 1, tzinfo=UTC)
    burst = [  # 30 new users, 5 titles each: 150 events, past the snapshot interval
        Interaction(user=f"fan{n}", item=item, action="click", timestamp=now - timedelta(hours=n, minutes=m))
        for n in range(30)
        for m, item in enumerate(["1500", "1501", "1502", "1503", "1504"])
    ]
    async with Recommender(own, llm=None) as first:
        assert first.index_origin == "fit"
        [(_, saved_at, _)] = first.snapshots.files()
        assert saved_at == first._fitted_position > 0
        async with Recommender(own, llm=None) as second:
            assert second.index_origin == "snapshot"  # loaded, not fitted again
            assert first.generator is not None and second.generator is not None
            assert abs(second.generator.cooc.base - first.generator.cooc.base).max() == 0
            assert second._users.codes == first._users.codes
            history = [e.item for e in await first.memory.events.history("1")]  # type: ignore[union-attr]
            assert np.allclose(second.generator.cooc.scores(history), first.generator.cooc.scores(history))
            assert abs(second.generator.transition.base - first.generator.transition.base).max() == 0
            assert np.allclose(second.generator.transition.scores(history), first.generator.transition.scores(history))

            await second.observe(burst, upkeep=False)
            await second.refit()
            newest = second.snapshots.files()[0]
            assert newest[1] == second._fitted_position == saved_at + 150  # saved again after 100+ new events
            assert "fan0" in snapshot_users(newest[2])

            report = await second.forget_user("fan0")
            assert report.rows["events"] == 5
            assert report.files["index_snapshots"] >= 1
            await second.refit()  # the whole refit after forgetting (it saves the new generation)
            files = second.snapshots.files()
            assert files and all(generation == 1 for generation, _, _ in files)
            assert all("fan0" not in snapshot_users(path) for _, _, path in files)
            assert "fan1" in snapshot_users(files[0][2])

            await first.recommend("newcomer", k=3, now=now)  # the other process: its poll sees generation 1
            await first.refit()
            assert "fan0" not in first._users.codes and "fan1" in first._users.codes
            assert abs(first.generator.cooc.base + first.generator.cooc.delta - second.generator.cooc.base).max() == 0

    async with Recommender(own, llm=None) as third:
        assert third.index_origin == "snapshot" and third._generation == 1
        assert "fan0" not in third._users.codes


async def test_a_damaged_or_foreign_snapshot_is_not_loaded(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
    async with Recommender(own, llm=None) as first:
        [(_, _, path)] = first.snapshots.files()
    path.write_bytes(path.read_bytes()[:1000])  # torn (a copy cut short)
    async with Recommender(own, llm=None) as second:
        assert second.index_origin == "fit"  # fitted from the log instead, and saved whole again
        [(_, _, path)] = second.snapshots.files()
    changed = own.model_copy(update={"retrieval_cooc_window": 5})
    async with Recommender(changed, llm=None) as third:
        assert third.index_origin == "fit"  # the saved one counts pairs 10 apart: not this configuration's index
        assert third.generator is not None and third.generator.cooc.window == 5
