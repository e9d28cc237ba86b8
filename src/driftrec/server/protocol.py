"""uvicorn's HTTP protocol, with a response's writes joined into one per event-loop turn.

uvicorn writes a response's status line and headers when the app sends ``http.response.start`` and the body
when it sends ``http.response.body``: two writes, two system calls, and a client that wakes twice (once for
headers it cannot use without the body). Both messages are sent in the same turn of the event loop, so the
transport here keeps what is written during a turn and writes it once at the end of that turn — what
Node.js's ``cork()`` / ``uncork()`` on the next tick does, with no added delay: every byte leaves in the
turn it was written. Its access lines go through ``AccessWriter`` (server/logs.py) when the access log is
``driftrec serve``'s own, with no log record made per request. Under ``--workers N`` it also keeps its
process's share of the connections (server/balance.py). Everything else is uvicorn's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from driftrec.server.balance import process_tally
from driftrec.server.logs import AccessWriter

try:  # uvicorn's fast parser when installed (uvicorn[standard]), else its pure-Python one
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Protocol
except ImportError:  # pragma: no cover - httptools ships with this project's dependencies
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Protocol  # type: ignore[assignment]


class TurnWrites:
    """A transport that joins the writes of one event-loop turn into one write at its end."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._write_pending)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _write_pending(self) -> None:
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._write_pending()  # what was written before the close is sent, as with the transport itself
        self._transport.close()

    def write_eof(self) -> None:
        self._write_pending()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class OneWriteHttp(_Protocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol over ``TurnWrites``: ``driftrec serve`` runs with it (``http=``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.access_log and (writer := AccessWriter.serving(self.access_logger)) is not None:
            self.access_logger = writer  # uvicorn's response cycle calls only its ``info``

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(TurnWrites(transport, self.loop))  # type: ignore[arg-type]
        self._shed = False
        if (tally := process_tally()) is not None:
            tally.publish(len(self.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if (tally := process_tally()) is not None:
            if self._shed:
                self._shed = False
                tally.left()
            tally.publish(len(self.connections))

    def on_headers_complete(self) -> None:
        """A request begins: above this process's share of the connections (server/balance.py), its response
        closes the connection, and the client's next one is hashed to a process afresh."""
        super().on_headers_complete()
        tally = process_tally()
        cycle = self.cycle
        if tally is not None and not self._shed and cycle is not None and cycle.keep_alive:
            self._shed = tally.should_shed(len(self.connections))
            cycle.keep_alive = not self._shed
