"""The transition source reads "what did people consume next", with direction: an item that followed the
user's latest item outranks one that only came before it, and nearer steps count more."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftrec.models import Interaction, Item
from driftrec.retrieval.sources import CoOccurrenceIndex, RetrievalRequest, TransitionIndex, top_scored

START = datetime(1998, 1, 1, tzinfo=UTC)
IDS = ["alien", "aliens", "heat", "fargo", "babe"]


def sequences(*orders: list[str]) -> list[list[Interaction]]:
    return [
        [
            Interaction(user=f"u{n}", item=item, action="click", timestamp=START + timedelta(minutes=m))
            for m, item in enumerate(order)
        ]
        for n, order in enumerate(orders)
    ]


def score(index: CoOccurrenceIndex, seeds: list[str]) -> dict[str, float]:
    return dict(zip(IDS, index.scores(seeds).tolist(), strict=True))


def test_what_came_next_outranks_what_came_before() -> None:
    logs = sequences(["alien", "aliens"], ["heat", "alien"])
    steps = score(TransitionIndex(backward=0.3).fit(logs, IDS), ["alien"])
    assert steps["aliens"] > steps["heat"] > 0  # followed alien; only preceded it
    assert abs(steps["aliens"] - 1.0 / 1.3) < 1e-6 and abs(steps["heat"] - 0.3 / 1.3) < 1e-6  # alien's row, normalized
    # co-occurrence has no direction: both neighbours of alien score the same
    together = score(CoOccurrenceIndex().fit(logs, IDS), ["alien"])
    assert together["aliens"] == together["heat"] > 0


def test_nearer_steps_count_more_and_backward_zero_ignores_what_came_before() -> None:
    logs = sequences(["alien", "aliens", "fargo"], ["babe", "alien"])
    steps = score(TransitionIndex(step_decay=0.5, backward=0.0).fit(logs, IDS), ["alien"])
    assert abs(steps["aliens"] - 2 * steps["fargo"]) < 1e-6 and steps["fargo"] > 0  # one step vs two steps later
    assert steps["babe"] == 0.0


def test_the_latest_seed_weighs_most() -> None:
    logs = sequences(["alien", "aliens"], ["heat", "fargo"])
    steps = score(TransitionIndex(decay=0.5, backward=0.0).fit(logs, IDS), ["alien", "heat"])  # heat is latest
    assert abs(steps["fargo"] - 2 * steps["aliens"]) < 1e-6 and steps["aliens"] > 0


def test_a_seed_reads_at_most_its_largest_neighbours_and_short_rows_stay_exact() -> None:
    """seed_neighbours caps how many of a seed's counts are read: a popular item's row at a large catalog.
    A cap no row reaches changes nothing (MovieLens-100K's 1,682 items under the default 2,000)."""
    # alien co-occurs with aliens 3 times, heat twice, fargo once; babe only ever with fargo
    logs = sequences(*[["alien", "aliens"]] * 3, *[["alien", "heat"]] * 2, ["alien", "fargo"], ["fargo", "babe"])
    exact = score(CoOccurrenceIndex().fit(logs, IDS), ["alien"])
    assert score(CoOccurrenceIndex(seed_neighbours=3).fit(logs, IDS), ["alien"]) == exact  # no row is longer
    assert score(CoOccurrenceIndex(seed_neighbours=0).fit(logs, IDS), ["alien"]) == exact  # 0: every count
    capped = score(CoOccurrenceIndex(seed_neighbours=2).fit(logs, IDS), ["alien"])
    assert capped["aliens"] == exact["aliens"] and capped["heat"] == exact["heat"]  # the two largest, as before
    assert exact["fargo"] > 0 and capped["fargo"] == 0  # the smallest count of alien's row is not read
    # fargo's own row (alien, babe) is not longer than the cap: read whole
    assert score(CoOccurrenceIndex(seed_neighbours=2).fit(logs, IDS), ["fargo"]) == score(
        CoOccurrenceIndex().fit(logs, IDS), ["fargo"]
    )


def test_the_cap_follows_the_counts_through_incremental_updates() -> None:
    """New events land in the delta (read whole); when the delta is merged the heads are cut again from
    the merged counts, so the cap reads the largest counts of the log as it is now."""
    from driftrec.retrieval.log import EventColumns, UserCodes

    logs = sequences(*[["alien", "aliens"]] * 3, *[["alien", "heat"]] * 2, ["alien", "fargo"])
    index = CoOccurrenceIndex(seed_neighbours=2).fit(logs, IDS)
    codes = UserCodes()
    for n in range(len(logs)):
        codes.code(f"u{n}")
    later = [
        Interaction(user=f"v{n}", item=item, action="click", timestamp=START + timedelta(days=1, minutes=m))
        for n in range(4)
        for m, item in enumerate(["alien", "fargo"])
    ]
    index.update(EventColumns.from_interactions(later, index.position, codes), len(codes))
    assert index.delta.nnz == 0  # the new pairs outgrew a tenth of the base: merged, heads cut again
    rebuilt = CoOccurrenceIndex(seed_neighbours=2).fit(logs + [later[i : i + 2] for i in range(0, 8, 2)], IDS)
    assert score(index, ["alien"]) == score(rebuilt, ["alien"])
    now = score(index, ["alien"])
    assert now["fargo"] > 0 and now["heat"] == 0  # fargo's count (5) now outranks heat's (2)


@pytest.mark.parametrize("kind", [CoOccurrenceIndex, TransitionIndex])
def test_a_source_lists_what_its_full_scores_rank_first(kind: type[CoOccurrenceIndex]) -> None:
    """Candidates come from the items the seeds reach (no pass over the catalog per step); they are the
    same list the whole score vector gives, and the whole vector is 0 everywhere else."""
    rng = random.Random(3)
    ids = [f"i{n}" for n in range(60)]
    logs = [
        [
            Interaction(
                user=f"u{u}", item=rng.choice(ids[: 10 + u]), action="click", timestamp=START + timedelta(minutes=m)
            )
            for m in range(rng.randint(2, 15))
        ]
        for u in range(40)
    ]
    index = kind(seed_neighbours=8).fit(logs, ids)
    catalog = {i: Item(id=i, title=i, genres=["Drama"], year=1990) for i in ids}
    for history in logs[:10]:
        request = RetrievalRequest(user=history[0].user, history=history, now=START + timedelta(days=1))
        seeds = [e.item for e in history]
        positions, values = index.touched_scores(seeds)
        dense = index.scores(seeds)
        assert np.count_nonzero(dense) == len(positions) and np.array_equal(dense[positions], values)
        assert index.candidates_blocking(request, 20, catalog) == top_scored(ids, dense, 20, request, catalog)


@pytest.mark.parametrize("kind", [CoOccurrenceIndex, TransitionIndex])
def test_a_small_catalog_is_read_densely_with_the_sparse_reads_scores(kind: type[CoOccurrenceIndex]) -> None:
    """Counts over a catalog small enough (MovieLens-100K's 1,682 items) are also kept dense and a seed's row
    is read from there: the same scores as gathering the sparse rows, before and after new events land in
    the delta."""
    from driftrec.retrieval.log import EventColumns, UserCodes

    rng = random.Random(11)
    ids = [f"i{n}" for n in range(80)]

    def log(prefix: str, users: int, day: int, most: int) -> list[list[Interaction]]:
        return [
            [
                Interaction(
                    user=f"{prefix}{u}",
                    item=rng.choice(ids[: 20 + u]),
                    action="click",
                    timestamp=START + timedelta(days=day, minutes=m),
                )
                for m in range(rng.randint(2, most))
            ]
            for u in range(users)
        ]

    first, later = log("u", 50, 0, 20), log("v", 2, 1, 4)
    dense, sparse_read = kind().fit(first, ids), kind()
    sparse_read.DENSE_BYTES = 0  # this one gathers CSR rows
    sparse_read.fit(first, ids)
    assert dense._dense is not None and sparse_read._dense is None
    codes = UserCodes()
    for n in range(50):
        codes.code(f"u{n}")
    new = EventColumns.from_interactions([e for s in later for e in s], dense.position, codes)
    for stage in ("fitted", "updated"):
        if stage == "updated":
            dense.update(new, len(codes))
            sparse_read.update(new, len(codes))
            assert dense.delta.nnz > 0  # read besides the dense base
        for history in first[:15] + later:
            seeds = [e.item for e in history]
            a, b = dense.touched_scores(seeds), sparse_read.touched_scores(seeds)
            assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], rtol=1e-6), stage
