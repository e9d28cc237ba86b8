"""The popularity index takes new events into its time order by merging, not by sorting every event again:
the order must be exactly the stable sort of the kept events followed by the new ones, late and tied events
included."""

from __future__ import annotations

import numpy as np

from driftrec.retrieval.log import EventColumns
from driftrec.retrieval.sources import PopularityIndex


def columns(rng: np.random.Generator, n: int, first_seq: int, times: np.ndarray) -> EventColumns:
    return EventColumns(
        np.arange(first_seq, first_seq + n, dtype=np.int64),
        rng.integers(0, 50, n).astype(np.int64),
        rng.integers(0, 30, n).astype(np.int64),
        times.astype(np.float64),
    )


def test_merged_updates_equal_a_stable_sort_of_everything() -> None:
    rng = np.random.default_rng(7)
    ids = [str(i) for i in range(30)]
    start = columns(rng, 500, 0, np.sort(rng.integers(0, 1_000, 500)))
    index = PopularityIndex(window_days=30).fit_columns(start, ids)
    times, items = index.times.copy(), index.items.copy()
    seq = 500
    for step in range(60):
        n = int(rng.integers(1, 20))
        later = times[-1] + rng.integers(0, 3, n)  # later than everything kept (the usual case), or tying it
        anywhere = rng.integers(0, int(times[-1]) + 2, n)  # late arrivals and ties in the kept range, any order
        new_times = later if step % 3 == 0 else anywhere
        new = columns(rng, n, seq, new_times)
        seq += n
        index.update(new)
        both_times, both_items = np.concatenate([times, new.times]), np.concatenate([items, new.items])
        order = np.argsort(both_times, kind="stable")
        times, items = both_times[order], both_items[order]
        assert np.array_equal(index.times, times) and np.array_equal(index.items, items)
    index.update(columns(rng, 0, seq, np.zeros(0)))  # nothing new: nothing changes
    assert np.array_equal(index.times, times)
