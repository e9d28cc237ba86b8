"""The event log keeps everything it acknowledged, exactly once, whatever happens to the writer — on the
embedded SQLite file and on a real PostgreSQL server (each test that takes ``database_url`` runs on both)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from driftrec.memory import EventStore, event_id, open_session, sessionize
from driftrec.memory.db import open_database_url
from driftrec.memory.postgres import MAX_PARAMETERS
from driftrec.models import Action, Interaction

T0 = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)


def ev(user: str, item: str, minutes: float, **kwargs) -> Interaction:
    return Interaction(user=user, item=item, timestamp=T0 + timedelta(minutes=minutes), **kwargs)


def store_at(url: str | None, folder: Path) -> EventStore:
    """The event store on ``url`` (None: SQLite in ``folder``), as a process of the service opens it."""
    return EventStore(open_database_url(url, folder))


# Opens the same store in a child process (the writers below).
OPEN = "store = EventStore(open_database_url({url!r} or None, Path({folder!r})))"


async def test_replays_and_retries_never_double_count(tmp_path: Path, database_url: str | None) -> None:
    store = store_at(database_url, tmp_path)
    batch = [ev("u", "1", 0), ev("u", "2", 5, action=Action.LIKE), ev("u", "3", 9, event_id="client-42")]
    assert await store.append(batch) == 3
    assert await store.append(batch) == 0  # the same events again, ids derived from content
    assert await store.append([ev("u", "99", 50, event_id="client-42")]) == 0  # same explicit id
    history = await store.history("u")
    assert [e.item for e in history] == ["1", "2", "3"]
    assert history[1].action is Action.LIKE and history[2].event_id == "client-42"
    assert event_id(batch[0]) == event_id(ev("u", "1", 0))


@pytest.mark.parametrize("size", [1, 7, "over"])  # one statement for 1 and 7; "over": the backend's parameter limit
def test_a_batch_lands_whole_or_not_at_all_in_its_order(
    tmp_path: Path, database_url: str | None, size: int | str
) -> None:
    """A batch is written all or nothing, each new event once (repeats within it and of stored events
    skipped), in the batch's order of sequence numbers; a row the schema refuses leaves nothing of the batch.
    A batch that fits one statement's parameters is one multi-row INSERT (on PostgreSQL sent with the lock and
    COMMIT in one round trip), larger ones a transaction of many rows."""
    store = store_at(database_url, tmp_path)
    if size == "over":  # one event more than a statement's parameters hold: a transaction of many rows
        sqlite_limit = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        size = (MAX_PARAMETERS if database_url else sqlite_limit) // 8 + 1
    assert isinstance(size, int)
    before = [ev("u", "0", -1, event_id="kept")]
    assert store.append_blocking(before) == 1
    batch = [ev("u", str(i % 1682), i, event_id=f"e{i}") for i in range(size)]
    replayed = [*batch, batch[0], before[0]]  # one of its own again, one already stored
    assert store.append_blocking(replayed) == size
    assert [e.event_id for e in store.history_blocking("u")] == ["kept", *(f"e{i}" for i in range(size))]
    seqs = [row[0] for row in store.db.connection().execute("SELECT seq FROM events ORDER BY seq").fetchall()]
    assert seqs == sorted(seqs) and len(seqs) == size + 1

    refused = [(f"x{i}", "v", str(i), "click", float(i), None, None, None) for i in range(size)]
    refused[size // 2] = ("x-bad", None, "1", "click", 0.0, None, None, None)  # user is NOT NULL
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.db.append_rows(
            "events", ("event_id", "user", "item", "action", "ts", "rating", "text", "session_id"), refused
        )
    assert store.count_blocking("v") == 0 and store.count_blocking() == size + 1
    assert store.append_blocking([ev("v", "1", 0, event_id="after")]) == 1  # the connection serves on
    assert [e.event_id for e in store.history_blocking("v")] == ["after"]


def test_bad_events_are_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="action"):
        Interaction(user="u", item="1", action="teleport", timestamp=T0)
    with pytest.raises(ValidationError, match="rating"):
        Interaction(user="u", item="1", rating=-1, timestamp=T0)
    with pytest.raises(ValidationError, match="user"):
        Interaction(user="", item="1", timestamp=T0)


async def test_concurrent_writers_lose_nothing(tmp_path: Path, database_url: str | None) -> None:
    """Forty tasks here and two other processes write at once; every distinct event lands exactly once."""
    store = store_at(database_url, tmp_path)
    writer = textwrap.dedent(f"""
        import asyncio, sys
        from datetime import UTC, datetime, timedelta
        from pathlib import Path
        from driftrec.memory import EventStore
        from driftrec.memory.db import open_database_url
        from driftrec.models import Interaction
        {OPEN.format(url=database_url, folder=str(tmp_path))}
        tag = sys.argv[1]
        async def main():
            for i in range(100):
                await store.append([Interaction(user=f"p{{tag}}", item=str(i), event_id=f"{{tag}}-{{i}}",
                    timestamp=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i))])
        asyncio.run(main())
    """)
    others = [subprocess.Popen([sys.executable, "-c", writer, tag]) for tag in ("a", "b")]  # noqa: ASYNC220

    async def task(n: int) -> None:
        for i in range(10):
            await store.append([ev(f"t{n % 4}", f"{n}-{i}", i)])

    await asyncio.gather(*(task(n) for n in range(40)))
    assert [await asyncio.to_thread(p.wait, 120) for p in others] == [0, 0]
    assert await store.count() == 40 * 10 + 2 * 100
    assert await store.count("pa") == 100


def test_an_acknowledged_event_survives_a_killed_writer(tmp_path: Path, database_url: str | None) -> None:
    """The writer prints each id after append() returns; SIGKILL it mid-stream; every printed id is stored."""
    writer = textwrap.dedent(f"""
        import sys
        from datetime import UTC, datetime, timedelta
        from pathlib import Path
        from driftrec.memory import EventStore
        from driftrec.memory.db import open_database_url
        from driftrec.models import Interaction
        {OPEN.format(url=database_url, folder=str(tmp_path))}
        for i in range(100000):
            store.append_blocking([Interaction(user="k", item=str(i % 50), event_id=f"k-{{i}}",
                timestamp=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i))])
            print(f"k-{{i}}", flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    acknowledged = [process.stdout.readline().strip() for _ in range(200)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stored = {e.event_id for e in store_at(database_url, tmp_path).history_blocking("k")}
    assert set(acknowledged) <= stored


def test_sessions_split_on_the_gap_and_on_explicit_ids() -> None:
    events = [
        ev("u", "1", 0),
        ev("u", "2", 10),
        ev("u", "3", 35),
        ev("u", "4", 80),
        ev("u", "5", 85),
        ev("u", "6", 90, session_id="chat-1"),
        ev("u", "7", 91, session_id="chat-1"),
    ]
    sessions = sessionize(events, timedelta(minutes=30))
    assert [[e.item for e in s.interactions] for s in sessions] == [["1", "2", "3"], ["4", "5"], ["6", "7"]]
    assert [s.closed for s in sessions] == [True, True, False]
    assert sessions[2].session_id == "chat-1"
    assert open_session(events, timedelta(minutes=30), T0 + timedelta(minutes=100)).session_id == "chat-1"
    assert open_session(events, timedelta(minutes=30), T0 + timedelta(minutes=200)) is None


async def test_a_cached_history_is_always_what_is_stored(tmp_path: Path, database_url: str | None) -> None:
    """A serving process keeps users' histories in memory; what another process writes or deletes (forgets)
    shows in its very next read, with no wait for any poll."""
    serving = EventStore(open_database_url(database_url, tmp_path), cache_users=2)
    other = store_at(database_url, tmp_path)  # another process on the same store
    await other.append([ev("ada", "1", 0), ev("ada", "2", 5), ev("bob", "3", 1)])
    assert [e.item for e in await serving.history("ada")] == ["1", "2"]
    assert [e.item for e in await serving.history("ada")] == ["1", "2"]  # from the cache, checked

    await other.append([ev("ada", "9", 2)])  # written elsewhere, and earlier in time than the last one
    assert [e.item for e in await serving.history("ada")] == ["1", "9", "2"]

    await asyncio.to_thread(other.db.delete_user_blocking, "ada")  # forgotten through the other process
    assert await serving.history("ada") == []
    await other.append([ev("ada", "4", 30)])  # the same id back, with one new event: never the old ones
    assert [e.item for e in await serving.history("ada")] == ["4"]

    extended = serving.tail_reads
    await other.append([ev("ada", "6", 31)])  # a user who acts and looks again: the new row alone is read
    assert [e.item for e in await serving.history("ada")] == ["4", "6"] and serving.tail_reads == extended + 1

    for user in ("bob", "cy", "dee"):  # at most two users cached: the least recently read leave
        await other.append([ev(user, "5", 40)])
        await serving.history(user)
    assert len(serving._cache) == 2 and "ada" not in serving._cache
    assert [e.item for e in await serving.history("ada")] == ["4", "6"]


async def test_cached_events_of_one_item_share_the_catalogs_string(tmp_path: Path, database_url: str | None) -> None:
    """The cache keeps an item's id as the one interned string (the object the catalog order and the indexes
    hold), not a copy per event read: a request's lookups by item then meet a few thousand compact strings,
    found by identity, whatever the store's driver returned."""
    serving = EventStore(open_database_url(database_url, tmp_path), cache_users=10)
    await serving.append([ev("ada", "42", 0), ev("bob", "42", 1)])
    ada = await asyncio.to_thread(serving.history_rows_blocking, "ada")  # read whole
    await serving.append([ev("ada", "42", 2)])
    ada_after = await asyncio.to_thread(serving.history_rows_blocking, "ada")  # the new row alone
    bob = await asyncio.to_thread(serving.history_rows_blocking, "bob")
    assert serving.tail_reads == 1
    canonical = sys.intern("42")
    assert ada[0][2] is canonical and bob[0][2] is canonical
    assert all(row[2] is canonical for row in ada_after) and len(ada_after) == 2


async def test_a_cached_history_follows_any_mix_of_writes_times_and_forgets(
    tmp_path: Path, database_url: str | None
) -> None:
    """Many writes in random order of time (ties included) through another process, and forgets: after each,
    the serving process's cached history equals a fresh read of the store, event for event, in time order."""
    rng = random.Random(7)
    serving = EventStore(open_database_url(database_url, tmp_path), cache_users=10)
    other = store_at(database_url, tmp_path)
    for step in range(120):
        user = rng.choice(["ada", "bob"])
        if rng.random() < 0.05:
            await asyncio.to_thread(other.db.delete_user_blocking, user)
        else:
            minutes = rng.choice([0, 10, 10, 20, 30, step])  # ties with stored events, earlier and later ones
            await other.append([ev(user, str(rng.randint(1, 50)), minutes) for _ in range(rng.randint(1, 3))])
        for who in ("ada", "bob"):
            assert await serving.history(who) == await other.history(who), f"step {step}, {who}"
    assert serving.tail_reads > 30  # most reads after a write took the new rows alone
