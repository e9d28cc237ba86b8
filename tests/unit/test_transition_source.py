"""The transition source reads "what did people consume next", with direction: an item that followed the
user's latest item outranks one that only came before it, and nearer steps count more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from driftrec.models import Interaction
from driftrec.retrieval.sources import CoOccurrenceIndex, TransitionIndex

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
