"""PostgreSQL behind the memory store, for several API processes or hosts on one database.

The stores write one SQL dialect (``?`` placeholders, ``ON CONFLICT``, a column named ``user``); the
connection here translates the spellings PostgreSQL wants (``%s``, ``"user"``) once per statement text.
Transactions take one advisory lock, so they serialize exactly as SQLite's ``BEGIN IMMEDIATE`` does, across
every process on the database: a profile head moves by compare-and-set inside one, so two processes can
never write the same version or skip one. Reads run outside transactions (autocommit, read committed).

The schema is versioned in ``schema_migrations``; opening runs the missing steps under the same lock, so
processes starting together migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psycopg
import psycopg.conninfo
from psycopg.pq import TransactionStatus

from driftrec.memory.db import SCHEMA, SCHEMA_VERSION, Connection, Database, StoreUnavailable, insert_sql

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of "a driftrec transaction" (arbitrary, fixed: every process must agree).
_LOCK = 0x64726966  # "drif"
MAX_PARAMETERS = 65_535  # bind parameters one statement may carry (the protocol's 16-bit count)
IDLE = TransactionStatus.IDLE


_LITERAL = re.compile(r"('(?:[^']|'')*')")
_USER = re.compile(r'(?<!["\w])user(?!["\w])')


@functools.lru_cache(maxsize=512)
def translate(sql: str, *, parameters: bool = True) -> str:
    """The stores' SQL in PostgreSQL's spelling: ``?`` → ``%s`` and ``user`` → ``"user"`` outside literals.

    With ``parameters`` psycopg reads every ``%`` as a placeholder, literals included, so each literal
    ``%`` is doubled; without, the text goes as written."""
    parts = _LITERAL.split(sql)
    for i, part in enumerate(parts):
        if parameters:
            part = part.replace("%", "%%")
        if i % 2 == 0:  # even parts are outside quotes
            part = _USER.sub('"user"', part.replace("?", "%s"))
        parts[i] = part
    return "".join(parts)


@functools.lru_cache(maxsize=64)
def numbered(sql: str) -> str:
    """The stores' SQL in asyncpg's spelling: each ``?`` → ``$1``, ``$2``, ... and ``user`` → ``"user"``
    outside literals."""
    parts = _LITERAL.split(sql)
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    for i in range(0, len(parts), 2):  # even parts are outside quotes
        parts[i] = re.sub(r"\?", number, _USER.sub('"user"', parts[i]))
    return "".join(parts)


# What asyncpg raises when the server is gone, refuses, is shutting down or out of connections, or does not
# answer in time: the classes psycopg raises as OperationalError (08, 53, 57, 58), and the socket's errors.
_ASYNC_LOST = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresSystemError,
)
ASYNC_READERS = 8  # read connections per event loop at most (one process's requests in flight share them)
# The read connections' session: every statement they run looks one user up by the leading column of an index,
# a plan that holds for any parameters; left to choose, PostgreSQL kept planning the state-with-new-events
# statement for each user's parameters (~300 µs of its CPU each time: 522 µs a read at idle against 213)
READ_SETTINGS = {"plan_cache_mode": "force_generic_plan"}
# libpq's connection parameters asyncpg takes, and under which name (anything else: no asynchronous reads)
_ASYNCPG_NAMES = {
    "host": "host",
    "port": "port",
    "user": "user",
    "password": "password",
    "dbname": "database",
    "passfile": "passfile",
    "sslmode": "ssl",
    "target_session_attrs": "target_session_attrs",
}
_IGNORED = {"connect_timeout", "application_name", "fallback_application_name", "client_encoding"}


def asyncpg_arguments(url: str) -> dict[str, Any] | None:
    """``url`` (a libpq URI or keyword string, parsed by libpq's rules) as asyncpg's connect arguments; None
    when it sets a parameter asyncpg cannot take the same way (client certificates, ``options``, several
    hosts ...): the reads then stay in worker threads on psycopg, which takes any. The connect timeout is
    the store's own (``connect_timeout_s``)."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return None
    unknown = sorted(set(given) - set(_ASYNCPG_NAMES) - _IGNORED)
    if "," in str(given.get("host", "")) + str(given.get("port", "")):
        unknown.append("several hosts")
    if unknown:
        log.info("asynchronous reads off (asyncpg does not take %s): reads in worker threads", ", ".join(unknown))
        return None
    arguments: dict[str, Any] = {_ASYNCPG_NAMES[k]: v for k, v in given.items() if k in _ASYNCPG_NAMES}
    if "port" in arguments:
        arguments["port"] = int(arguments["port"])
    if "application_name" in given:
        arguments["server_settings"] = {"application_name": str(given["application_name"])}
    return arguments


def postgres_ddl(sqlite_ddl: str) -> str:
    """SQLite's schema in PostgreSQL's types: one schema text serves both backends (a migration is
    written once). 64-bit integers, doubles, identity keys, bytea, the quoted ``user`` column."""
    ddl = sqlite_ddl.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    ddl = re.sub(r"\bINTEGER\b", "BIGINT", ddl)
    ddl = re.sub(r"\bREAL\b", "DOUBLE PRECISION", ddl)
    ddl = re.sub(r"\bBLOB\b", "BYTEA", ddl)
    return translate(ddl, parameters=False)


# Each step brings the schema from version i to i + 1 (the list index). PostgreSQL starts at SQLite's v4
# (steps 1-3 migrated SQLite files of older driftrec releases); later steps are appended to both.
# v5: a user's events by sequence number, for the state read that also brings a user's new events
# (memory/service.py: _STATE_WITH_TAIL) — only PostgreSQL reads it (SQLite's reads are local, and its bulk
# ingest keeps its margin without a third index); SQLite's v5 changes nothing.
MIGRATIONS: list[str] = [
    "",
    "",
    "",
    postgres_ddl(SCHEMA),
    postgres_ddl("CREATE INDEX IF NOT EXISTS events_user_seq ON events (user, seq)"),
]
assert len(MIGRATIONS) == SCHEMA_VERSION


def redact(url: str) -> str:
    """``url`` without its password (for logs and error messages)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _Readers:
    """One event loop's asyncpg connections for reads. The most recently used is taken first (a few warm
    backends serve the reads, not every one in turn), at most ``size`` are open (a read waits for one when
    all are busy), and one that failed in any way is dropped, not reused. No reset between reads, as
    asyncpg's pool does: these connections only run single reads, with no session state to clear, and its
    reset is one more round trip per read (at idle 165 µs of CPU a read; its pool without the reset 82, these 57)."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int):
        self._connect = connect
        self._idle: list[asyncpg.Connection] = []
        self._slots = asyncio.Semaphore(size)  # in use + idle never exceeds size: one is made only when none idle

    async def read(self, sql: str, params: Sequence[Any], limit_s: float, *, many: bool) -> Any:
        """``sql``'s rows (``many``) or its first row, over a connection of this loop's."""
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                conn = self._idle.pop()
                conn = None if conn.is_closed() else conn
            if conn is None:
                conn = await self._connect()
            try:
                found = await (conn.fetch if many else conn.fetchrow)(sql, *params, timeout=limit_s)
            except BaseException:
                conn.terminate()  # cancelled mid-read, timed out, lost: never handed to another read
                raise
            self._idle.append(conn)
            return found

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


class _PgConnection(Connection):
    """One psycopg connection (autocommit; transactions are explicit BEGIN ... COMMIT).

    A connection that died while idle (the server restarted, the network dropped) is replaced and the
    statement sent once more on the new one: at that point nothing of a transaction has run. A failure
    inside a transaction is never retried: the transaction fails and nothing of it is kept."""

    def __init__(self, connect: Callable[[], psycopg.Connection], where: str):
        self._connect = connect
        self.where = where
        self.raw = self._reconnect()

    def _reconnect(self) -> psycopg.Connection:
        try:
            return self._connect()
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"postgresql at {self.where}: {e}") from e

    def _send(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor:
        if not params:
            return self.raw.execute(translate(sql, parameters=False))  # type: ignore[arg-type]
        return self.raw.execute(translate(sql), params)  # type: ignore[arg-type]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        if self.raw.closed or self.raw.broken:
            self.raw = self._reconnect()
        idle = self.raw.info.transaction_status == IDLE
        try:
            return self._send(sql, params)
        except psycopg.OperationalError as e:
            if not (idle and (self.raw.closed or self.raw.broken)):
                raise StoreUnavailable(f"postgresql at {self.where}: {e}") from e
        self.raw = self._reconnect()  # it died while idle: once more, on a new connection
        try:
            return self._send(sql, params)
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"postgresql at {self.where}: {e}") from e

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        try:
            with self.raw.cursor() as cursor:
                cursor.executemany(translate(sql), list(rows))
                return cursor.rowcount
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"postgresql at {self.where}: {e}") from e

    def commit_with(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> psycopg.Cursor:
        """Inside the transaction BEGIN opened: ``statements``, then COMMIT, sent together and answered in one
        round trip (psycopg's pipeline mode); the last statement's cursor. Whatever they lock is held while
        the server runs them, not across the client's waits between round trips. Any error: ROLLBACK (what
        ran is not kept), a lost connection raised as StoreUnavailable."""
        try:
            with self.raw.pipeline():
                cursors = [self.raw.execute(translate(sql), params) for sql, params in statements]  # type: ignore[arg-type]
                self.raw.execute("COMMIT")
            return cursors[-1]
        except BaseException as e:
            with contextlib.suppress(psycopg.Error):
                if not (self.raw.closed or self.raw.broken) and self.raw.info.transaction_status != IDLE:
                    self.raw.execute("ROLLBACK")
            if isinstance(e, psycopg.OperationalError):
                raise StoreUnavailable(f"postgresql at {self.where}: {e}") from e
            raise


class PostgresDatabase(Database):
    """The shared store: several processes or hosts, one database."""

    backend = "postgresql"

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0):
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()
        self._migrate()
        self._async_arguments = asyncpg_arguments(url)
        self.async_reads = self._async_arguments is not None
        self._readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Readers] = weakref.WeakKeyDictionary()

    async def read_row(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """One row read on the event loop, over asyncpg: the loop serves other requests while the server
        answers, and no worker thread waits for the GIL after the round trip (``_read``)."""
        row = await self._read(sql, params, many=False)
        return tuple(row) if row is not None else None

    async def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row, read on the event loop like ``read_row``."""
        return [tuple(row) for row in await self._read(sql, params, many=True)]

    async def _read(self, sql: str, params: Sequence[Any], *, many: bool) -> Any:
        """A connection that died while idle is replaced and the read sent once more; a server that is gone,
        refuses, or does not answer within the connect timeout raises StoreUnavailable."""
        loop = asyncio.get_running_loop()
        readers = self._readers.get(loop)
        if readers is None:  # asyncpg's connections belong to the loop that made them
            readers = self._readers[loop] = _Readers(self._connect_async, ASYNC_READERS)
        for attempt in (1, 2):
            try:
                return await readers.read(numbered(sql), params, self.connect_timeout_s, many=many)
            except _ASYNC_LOST as e:
                if attempt == 2 or not isinstance(e, asyncpg.ConnectionDoesNotExistError):
                    raise StoreUnavailable(f"postgresql at {self.describe()}: {e}") from e
        raise AssertionError("unreachable")

    async def _connect_async(self) -> asyncpg.Connection:
        """A read connection whose prepared statements keep PostgreSQL's generic plan (``READ_SETTINGS``)."""
        arguments = dict(self._async_arguments or {})
        arguments["server_settings"] = READ_SETTINGS | arguments.get("server_settings", {})
        return await asyncpg.connect(timeout=self.connect_timeout_s, **arguments)

    async def aclose(self) -> None:
        """Close this event loop's read connections (a later read opens them again)."""
        readers = self._readers.pop(asyncio.get_running_loop(), None)
        if readers is not None:
            await readers.aclose()

    def describe(self) -> str:
        return redact(self.url)

    def connection(self) -> _PgConnection:
        conn: _PgConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _PgConnection(self._connect, self.describe())
        return conn

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout_s)))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.raw.close()
            self._local.conn = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_PgConnection]:
        """BEGIN; take the driftrec lock; ...; COMMIT (ROLLBACK on any error)."""
        conn = self.connection()
        conn.execute("BEGIN")  # on a connection that died while idle: replaced, and BEGIN sent again
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                if not (conn.raw.closed or conn.raw.broken):
                    conn.raw.execute("ROLLBACK")
            raise

    def append_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """A batch that fits one statement's parameters (8,191 events) is one multi-row INSERT, sent with the
        driftrec lock and COMMIT in one round trip after BEGIN (``commit_with``): the lock that keeps rows
        committed in the order of their sequence numbers is then held while the server inserts, not across
        the writer's waits for the GIL between three round trips (a click was BEGIN, the lock, the INSERT and
        COMMIT, each a round trip, the middle two under a lock every writer of every process waits for).
        Larger batches (bulk imports) keep one transaction of many rows."""
        if not rows or len(rows) * len(columns) > MAX_PARAMETERS:
            return super().append_rows(table, columns, rows)
        conn = self.connection()
        conn.execute("BEGIN")  # on a connection that died while idle: replaced, and BEGIN sent again
        insert = (insert_sql(table, columns, len(rows)), [value for values in rows for value in values])
        return conn.commit_with([("SELECT pg_advisory_xact_lock(?)", (_LOCK,)), insert]).rowcount

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            if done > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database at {self.describe()} is at schema v{done}, newer than this driftrec "
                    f"(v{SCHEMA_VERSION}): upgrade driftrec"
                )
            for version in range(done + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        conn.raw.execute(statement)  # type: ignore[arg-type] # DDL: already PostgreSQL's spelling
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('pseudonym_key', ?) ON CONFLICT DO NOTHING",
                (secrets.token_bytes(32),),
            )

    def schema_version(self) -> int:
        return int(self.connection().execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0])

    def checkpoint(self) -> None:
        """VACUUM the user tables so deleted rows' space is reclaimed (bytes may stay in data files and WAL
        until PostgreSQL reuses them: see docs/security.md)."""
        from driftrec.memory.db import USER_TABLES

        conn = self.connection()
        for table in USER_TABLES:
            conn.execute(f"VACUUM {table}")
