"""The durable event log: append-only, idempotent by event id (SQLite in WAL mode, or PostgreSQL).

The database (not Chroma) is the source of truth for what happened. A commit is durable (SQLite
``synchronous=FULL``; PostgreSQL's default fsync), so an acknowledged ``append`` survives a crash or power
loss; ``ON CONFLICT DO NOTHING`` on the event id means
replays and client retries never double-count. Events without an id get a deterministic one (a hash
of their content), so the same event sent twice is still one event. All database work runs in a
worker thread; the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import operator
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from sys import intern

from driftrec.memory.db import GENERATION, Database, SqliteDatabase
from driftrec.models import Action, History, Interaction, trusted
from driftrec.retrieval.log import EventColumns, UserCodes

_COLUMNS = ("event_id", "user", "item", "action", "ts", "rating", "text", "session_id")  # as written


def event_id(event: Interaction) -> str:
    """The event's own id, or a content hash: the same event always gets the same id."""
    if event.event_id:
        return event.event_id
    key = "\x1f".join(
        str(v)
        for v in (
            event.user,
            event.item,
            event.action.value,
            event.timestamp.isoformat(),
            event.rating,
            event.text,
            event.session_id,
        )
    )
    return "h:" + hashlib.sha256(key.encode()).hexdigest()[:32]


class EventStore:
    """Append-only interaction log for every user.

    ``cache_users`` keeps the histories of that many recently read users in memory (least recently read
    out first). A cached history is checked against the database on every read by one index-only query —
    the user's event count and highest sequence number — and read again whenever either moved, so a read
    always returns exactly what is stored (events written or deleted by any process included), at a
    fraction of the cost of fetching and building every row again for each recommendation."""

    def __init__(self, db: Database | Path, *, cache_users: int = 0):
        self.db = db if isinstance(db, Database) else SqliteDatabase(db)
        self.cache_users = cache_users
        # user -> (count, max seq, rows): plain tuples of str/float/None, which the garbage collector stops
        # tracking, so a large cache adds nothing to its pauses (cached models would: 100+ ms full collections)
        self._cache: OrderedDict[str, tuple[int, int, list[tuple]]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.tail_reads = 0  # cached histories extended with the new rows alone (``_with_tail``)

    # -- blocking core (runs in worker threads) ---------------------------------------------------

    def append_blocking(self, events: Iterable[Interaction]) -> int:
        """Write events in one transaction; returns how many were new."""
        rows = [
            (event_id(e), e.user, e.item, e.action.value, e.timestamp.timestamp(), e.rating, e.text, e.session_id)
            for e in events
        ]
        return self.db.append_rows("events", _COLUMNS, rows)

    def history_blocking(
        self, user: str, *, since: datetime | None = None, limit: int | None = None
    ) -> list[Interaction]:
        if since is None and limit is None and self.cache_users:
            return events_from_rows(self._cached_rows(user))
        query = _SELECT + " WHERE user = ?"
        params: list[object] = [user]
        if since is not None:
            query += " AND ts >= ?"
            params.append(since.timestamp())
        query += " ORDER BY ts, seq"
        rows = self.db.connection().execute(query, params).fetchall()
        if limit is not None:
            rows = rows[-limit:]
        return events_from_rows(rows)

    def history_rows_blocking(self, user: str, version: tuple[int, int] | None = None) -> list[tuple]:
        """The user's whole history as stored rows (``events_from_rows`` makes them events, when they are
        needed). ``version``: the store's (count, latest seq) of their events, when the caller just read it
        (the cache's own check is then not sent again)."""
        if self.cache_users:
            return self._cached_rows(user, version)
        return self.db.connection().execute(_SELECT + " WHERE user = ? ORDER BY ts, seq", (user,)).fetchall()

    def is_cached(self, user: str, version: tuple[int, int]) -> bool:
        """Whether ``history_rows_blocking(user, version)`` answers from this process's cache, reading nothing."""
        return bool(self.cache_users) and self._current(user, version)[0] is not None

    def _cached_rows(self, user: str, version: tuple[int, int] | None = None) -> list[tuple]:
        """The rows from this process's cache when the store's (count, latest seq) of the user's events — which
        moves with every write and forget through any process — is what they were read at; the cached rows
        and the new ones when only new ones came (``_with_tail``); else read whole."""
        conn = self.db.connection()
        if version is None:
            version = conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM events WHERE user = ?", (user,)
            ).fetchone()
        current, cached = self._current(user, version)
        if current is not None:
            return current
        if cached is not None and version[0] > cached[0]:
            found = self._with_tail(cached, *_counted(conn.execute(_SELECT_TAIL, (user, user, cached[1])).fetchall()))
            if found is not None:
                return self._keep(user, *found)
        return self._keep_whole(user, conn.execute(_WHOLE, (user,)).fetchall())

    async def cache(self, user: str, version: tuple[int, int]) -> None:
        """``_cached_rows``'s reads made over the store's asynchronous reads (on the event loop): afterwards
        the cache holds the user's history at ``version`` unless a write came in between (the next check
        then reads again)."""
        if not self.cache_users:
            return
        current, cached = self._current(user, version)
        if current is not None:
            return
        if cached is not None and version[0] > cached[0]:
            found = self._with_tail(cached, *_counted(await self.db.read_rows(_SELECT_TAIL, (user, user, cached[1]))))
            if found is not None:
                self._keep(user, *found)
                return
        self._keep_whole(user, await self.db.read_rows(_WHOLE, (user,)))

    def cached_top(self, user: str) -> int | None:
        """The latest sequence number among the user's cached events (None: nothing cached): what a read of
        their new rows alone starts after (``take_tail``)."""
        with self._cache_lock:
            cached = self._cache.get(user) if self.cache_users else None
        return None if cached is None else cached[1]

    def take_tail(self, user: str, version: tuple[int, int], rows: Sequence[tuple]) -> None:
        """Bring the cache to ``version`` — the store's (count, latest seq) of the user's events — with
        ``rows``: their events past the cached ones' latest sequence number (``_SELECT_SEQ``'s columns, in
        time order), read in the same statement as ``version`` (one snapshot). When they do not add up to it
        (a forget, a write committed out of sequence order, or another read changed the cache since) nothing
        is kept, and the next read of the history reads as it would have."""
        current, cached = self._current(user, version)
        if current is None and cached is not None and version[0] > cached[0]:
            found = self._with_tail(cached, rows, version[0])
            if found is not None:
                self._keep(user, *found)

    def _current(
        self, user: str, version: tuple[int, int]
    ) -> tuple[list[tuple] | None, tuple[int, int, list[tuple]] | None]:
        """The cached rows when they are at ``version`` (and [] for a user with no events), else None; and
        what the cache holds for the user."""
        count, top = version
        with self._cache_lock:
            if count == 0:
                self._cache.pop(user, None)
                return [], None
            cached = self._cache.get(user)
            if cached is not None and cached[:2] == (count, top):
                self._cache.move_to_end(user)
                return cached[2], cached
        return None, cached

    def _keep_whole(self, user: str, rows: Sequence[tuple]) -> list[tuple]:
        # (count, max) of the rows read, not of the check: a write between them reads again next time
        return self._keep(user, (len(rows), max((r[0] for r in rows), default=0)), _cached_form(rows))

    def _keep(self, user: str, read_at: tuple[int, int], events: list[tuple]) -> list[tuple]:
        with self._cache_lock:
            if events:
                self._cache[user] = (*read_at, events)
                self._cache.move_to_end(user)
                while len(self._cache) > self.cache_users:
                    self._cache.popitem(last=False)
        return events

    def _with_tail(
        self, cached: tuple[int, int, list[tuple]], rows: Sequence[tuple], count: int | None
    ) -> tuple[tuple[int, int], list[tuple]] | None:
        """After a user's new events, the rows past the cached ones' latest sequence number (``_SELECT_SEQ``'s
        columns), read with the user's event ``count`` in the same statement (one snapshot), added to the
        cached ones. When the cached rows and those add up to that count, they are exactly the stored history
        (events are only ever deleted all at once, by forgetting, and a sequence number never comes back); else
        None, and the caller reads it whole (a forget, or a write that committed out of sequence order). What a
        user who acts and looks again costs: their new event or two, not their whole history again."""
        cached_count, cached_top, cached_rows = cached
        if not rows or cached_count + len(rows) != count:
            return None
        self.tail_reads += 1  # under the GIL; a count for tests and logs, not a lock-guarded total
        tail = _cached_form(rows)
        if tail[0][_TS] >= cached_rows[-1][_TS]:
            events = cached_rows + tail
        else:  # an event dated before the latest cached one: merged in time order, ties by sequence (cached first)
            events = list(heapq.merge(cached_rows, tail, key=operator.itemgetter(_TS)))
        return (len(events), max(cached_top, max(r[0] for r in rows))), events

    def forget_cached(self, user: str | None = None) -> None:
        """Drop one user's cached history (forgetting), or every user's (``None``)."""
        with self._cache_lock:
            if user is None:
                self._cache.clear()
            else:
                self._cache.pop(user, None)

    def all_blocking(self) -> list[Interaction]:
        """Every event, oldest first: what the co-occurrence and popularity indexes are fitted on."""
        return events_from_rows(self.db.connection().execute(_SELECT + " ORDER BY ts, seq").fetchall())

    def position_blocking(self) -> int:
        """The log position: the highest sequence number written (an index lookup, not a count).

        Writers are serialized, so sequence numbers are committed in order: everything at or below a
        position read once is there for good (forgetting a user aside)."""
        return int(self.db.connection().execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def state_blocking(self) -> tuple[int, int]:
        """(position, generation) in one round trip: what a serving process polls to know whether its
        candidate indexes are behind (new events) or hold deleted ones (a user was forgotten)."""
        row = (
            self.db.connection()
            .execute("SELECT COALESCE(MAX(seq), 0), (SELECT value FROM meta WHERE key = ?) FROM events", (GENERATION,))
            .fetchone()
        )
        return int(row[0]), int(bytes(row[1]).decode()) if row[1] is not None else 0

    def columns_blocking(
        self, positions: Mapping[str, int], users: UserCodes, *, after: int = 0, chunk: int = 200_000
    ) -> EventColumns:
        """Every event after log position ``after`` as columns (what the candidate indexes fit on), read in
        chunks of ``chunk`` rows so memory holds arrays, not rows."""
        parts = []
        while True:
            rows = (
                self.db.connection()
                .execute("SELECT seq, user, item, ts FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, chunk))
                .fetchall()
            )
            if not rows:
                break
            parts.append(EventColumns.from_rows(rows, positions, users))
            after = int(rows[-1][0])
            if len(rows) < chunk:
                break
        return EventColumns.concat(parts)

    def count_blocking(self, user: str | None = None) -> int:
        if user is None:
            return self.db.connection().execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return self.db.connection().execute("SELECT COUNT(*) FROM events WHERE user = ?", (user,)).fetchone()[0]

    # -- async API --------------------------------------------------------------------------------

    async def append(self, events: Iterable[Interaction]) -> int:
        """Durably record events (validated Interaction models); returns how many were new."""
        return await asyncio.to_thread(self.append_blocking, list(events))

    async def history(self, user: str, *, since: datetime | None = None, limit: int | None = None) -> list[Interaction]:
        """The user's events, oldest first (ties: arrival order)."""
        return await asyncio.to_thread(self.history_blocking, user, since=since, limit=limit)

    async def count(self, user: str | None = None) -> int:
        return await asyncio.to_thread(self.count_blocking, user)


_SELECT = "SELECT event_id, user, item, action, ts, rating, text, session_id FROM events"
_SELECT_SEQ = "SELECT seq, event_id, user, item, action, ts, rating, text, session_id FROM events"
_WHOLE = _SELECT_SEQ + " WHERE user = ? ORDER BY ts, seq"  # a user's whole history, with sequence numbers
# a user's rows past a sequence number, each with the user's event count (one snapshot: ``_with_tail``)
_SELECT_TAIL = (
    "SELECT seq, event_id, user, item, action, ts, rating, text, session_id,"
    " (SELECT COUNT(*) FROM events WHERE user = ?) FROM events WHERE user = ? AND seq > ? ORDER BY ts, seq"
)


def _counted(rows: Sequence[tuple]) -> tuple[list[tuple], int | None]:
    """``_SELECT_TAIL``'s rows without their last column, and that column: the user's event count."""
    return [r[:-1] for r in rows], (rows[0][-1] if rows else None)


_TS = 4  # a row's time (``_SELECT``'s columns)


def _cached_form(rows: Iterable[Sequence]) -> list[tuple]:
    """``_SELECT_SEQ`` rows as the cache keeps them: ``_SELECT``'s columns, the item id interned. Every cached
    event of an item then holds the one string object the catalog and the indexes hold (``sys.intern``), not
    a copy per event read: a request's lookups by item (the seen set, the indexes' positions, the catalog)
    meet a few thousand compact strings instead of one per stored event scattered over the heap, and find
    them by identity — a MovieLens request's seen mask 17 -> 4 us."""
    return [(r[1], r[2], intern(r[3]), *r[4:]) for r in rows]


def events_from_rows(rows: list[tuple]) -> list[Interaction]:
    """Stored rows (``_SELECT``'s columns, as ``history_rows_blocking`` returns them) as events, without
    validating again: every row was validated when it was written."""
    return [_event_from_row(r) for r in rows]


def history_from_rows(rows: list[tuple]) -> History:
    """Stored rows as a ``History``: the items at once, each event when it is first read (a computed
    recommendation reads every item of the user's history but builds only its last few events)."""
    return History(rows, _event_from_row, [r[2] for r in rows])


def _event_from_row(r: tuple) -> Interaction:
    return trusted(
        Interaction,
        {
            "user": r[1],
            "item": r[2],
            "action": _ACTIONS[r[3]],
            "timestamp": datetime.fromtimestamp(r[4], UTC),
            "rating": r[5],
            "text": r[6],
            "session_id": r[7],
            "event_id": r[0],
        },
    )


_ACTIONS = {a.value: a for a in Action}
