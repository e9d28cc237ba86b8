"""A request reads the user's state and what it computes from on the event loop as far as that never blocks
it: on SQLite, reads of a local file, cheaper than a worker thread's hop; on PostgreSQL the state and the
user's history (whole, or its new rows) over an asynchronous driver. A profile (whose vector Chroma holds),
or summaries, stated preferences and edits, take a worker thread. Every way gives the same answer (real
MovieLens histories, real Chroma, SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.memory.events import EventStore
from driftrec.memory.service import Memory
from driftrec.models import Interaction, ProfileEdit, RecommendationList
from tests.conftest import copy_of, on_backend

USER = "7"  # a seeded MovieLens user with a long history
OTHER = "1"  # another


def ids(answer: RecommendationList) -> list[str]:
    return [r.item.id for r in answer.items]


def counting_reads(memory: Memory) -> dict[str, int]:
    """Count the reads of what an answer is computed from, by where they ran: the event loop's thread (the
    test's main thread) or a worker thread; and the state's reads, blocking or not."""
    counts = {"loop": 0, "worker": 0, "state": 0, "state_async": 0}
    read, state, state_async = memory.ranking_inputs_blocking, memory.state_blocking, memory.state

    def counted(*args: Any) -> Any:
        counts["loop" if threading.current_thread() is threading.main_thread() else "worker"] += 1
        return read(*args)

    def counted_state(*args: Any) -> Any:
        counts["state"] += 1
        return state(*args)

    async def counted_state_async(*args: Any) -> Any:
        counts["state_async"] += 1
        return await state_async(*args)

    memory.ranking_inputs_blocking = counted  # type: ignore[method-assign]
    memory.state_blocking = counted_state  # type: ignore[method-assign]
    memory.state = counted_state_async  # type: ignore[method-assign]
    return counts


def counting_async_reads(memory: Memory) -> list[str]:
    """The statements the store reads asynchronously (PostgreSQL), named by what they read."""
    seen: list[str] = []
    db = memory.db
    row, rows = db.read_row, db.read_rows

    def name(sql: str) -> str:
        return "state and new events" if "UNION ALL" in sql else "state" if "profile_heads" in sql else "history"

    async def read_row(sql: str, params: Any = ()) -> Any:
        seen.append(name(sql))
        return await row(sql, params)

    async def read_rows(sql: str, params: Any = ()) -> Any:
        seen.append(name(sql))
        return await rows(sql, params)

    db.read_row, db.read_rows = read_row, read_rows  # type: ignore[method-assign]
    return seen


async def test_an_answer_read_on_the_loop_is_the_one_a_worker_threads_read_gives(
    settings: Settings, seeded_data: Path, tmp_path: Path, database_url: str | None
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = on_backend(
        settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "ranking_answer_cache_s": 0.0}),
        database_url,
        data,
    )
    async with Recommender(own, llm=None) as rec:
        assert rec.memory is not None
        local = rec.memory.db.local_reads
        assert local == (database_url is None) and rec.memory.db.async_reads == (database_url is not None)
        counts = counting_reads(rec.memory)
        first = await rec.recommend(USER, k=10)  # the whole history read
        again = await rec.recommend(USER, k=10)  # from the process's cache, checked against the state
        newcomer = await rec.recommend("never-seen", k=5)  # no events at all
        # every read on the loop: the state's statement blocking on SQLite, asynchronous on PostgreSQL (and the
        # history there too, over the same driver)
        assert counts == {"loop": 3, "worker": 0, "state": 3 if local else 0, "state_async": 0 if local else 3}
        assert not first.degraded and len(ids(first)) == 10 and len(ids(newcomer)) == 5
        assert again.model_dump(exclude={"seconds"}) == first.model_dump(exclude={"seconds"})

        # the same answer from a worker thread's reads (a store that reads neither locally nor asynchronously)
        db, was = rec.memory.db, (rec.memory.db.local_reads, rec.memory.db.async_reads)
        db.local_reads = db.async_reads = False
        rec.memory.events.forget_cached()
        hopped = await rec.recommend(USER, k=10)
        db.local_reads, db.async_reads = was
        assert counts["worker"] == 1 and counts["state"] == (4 if local else 1)
        assert hopped.model_dump(exclude={"seconds"}) == first.model_dump(exclude={"seconds"})

        # an edit makes a profile version (its vector is in Chroma): read in a worker thread on either store
        await rec.edit_profile(USER, [ProfileEdit(name="Drama", kind="dislike")])
        edited = [await rec.recommend(USER, k=10) for _ in range(2)]
        assert counts["loop"] == 3 and counts["worker"] == 3
        assert ids(edited[0]) == ids(edited[1])
        assert not [r for r in edited[1].items if "Drama" in r.item.genres]

        # another user with only events clicks: their next answer reads the new row alone, still on the loop
        # (last: the click moves the candidate indexes, and so the answers above)
        before = await rec.recommend(OTHER, k=10)  # their whole history, read on the loop
        tails = rec.memory.events.tail_reads
        await rec.observe([Interaction(user=OTHER, item=ids(before)[0], action="click", timestamp=datetime.now(UTC))])
        round_trips = counting_async_reads(rec.memory)
        clicked = await rec.recommend(OTHER, k=10)
        assert rec.memory.events.tail_reads == tails + 1 and counts["loop"] == 5 and counts["worker"] == 3
        assert ids(before)[0] not in ids(clicked)
        # on PostgreSQL the new row came with the state, in its statement: one round trip for the whole answer
        assert round_trips == ([] if local else ["state and new events"])
        if not local:  # its plan made once per connection, not for each user's parameters
            assert await rec.memory.db.read_row("SHOW plan_cache_mode") == ("force_generic_plan",)
            round_trips.pop()

        # two more, the second dated before the first: the cached history takes them in the store's order
        now = datetime.now(UTC)
        await rec.observe(
            [
                Interaction(user=OTHER, item=ids(clicked)[0], action="click", timestamp=now),
                Interaction(user=OTHER, item=ids(clicked)[1], action="click", timestamp=now - timedelta(hours=1)),
            ]
        )
        await rec.recommend(OTHER, k=10)
        assert round_trips == ([] if local else ["state and new events"] * 2)
        stored = EventStore(rec.memory.db).history_rows_blocking(OTHER)  # no cache: read whole from the store
        assert rec.memory.events.history_rows_blocking(OTHER) == stored and len(stored) > 3
