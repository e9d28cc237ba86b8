"""Several API processes on one port, each accepting from its own listening socket (SO_REUSEPORT), so the
kernel spreads new connections over them.

uvicorn's ``workers`` hand every process one shared socket, and whichever process wakes first accepts all
that is queued: a client that opens its connections at once (a connection pool, a proxy's upstream
keep-alive, a load generator) lands mostly on one process, which then serves at one core's speed while the
others idle (measured with 50 wrk connections and two processes: 48/2 and 50/0 on PostgreSQL, 38/12 and
29/21 on SQLite; docs/benchmarks.md). With a socket each, the kernel hashes every new connection to one of
them, and the processes then keep the split even by closing connections above their share after a response
(server/balance.py). Linux only (elsewhere SO_REUSEPORT does not balance): other systems keep uvicorn's
shared socket. uvicorn's supervisor still runs the processes (restarts, signals); only the sockets differ.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from driftrec.server.balance import TALLY_ENV, create_tally

log = logging.getLogger("uvicorn.error")


def balanced_sockets_supported() -> bool:
    """Whether the kernel balances connections over sockets sharing a port (Linux's SO_REUSEPORT)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bind_shared(sock: socket.socket, host: str, port: int) -> socket.socket:
    """Bind ``sock`` to the address as one of several sockets sharing it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # type: ignore[attr-defined]
    sock.bind((host, port))
    return sock


def _own_socket(family: int, host: str, port: int) -> socket.socket:
    """In a worker process: its own socket on the address (uvicorn makes it listen)."""
    return _bind_shared(socket.socket(family, socket.SOCK_STREAM), host, port)


class PortClaim(socket.socket):
    """In the supervising process: a socket bound to the address with SO_REUSEPORT and never listening (it
    holds the port, so an address in use fails here, before any worker starts, and receives no
    connection). Sent to a worker process — pickled, the way uvicorn's supervisor sends its sockets — it
    arrives as that worker's own new socket on the same address."""

    @classmethod
    def on(cls, host: str, port: int) -> PortClaim:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        claim = _bind_shared(cls(family, socket.SOCK_STREAM), host, port)
        assert isinstance(claim, PortClaim)
        return claim

    def __reduce__(self) -> tuple[Any, tuple[int, str, int]]:
        host, port = self.getsockname()[:2]
        return _own_socket, (int(self.family), host, port)


def serve_processes(app: str, *, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve the app factory ``app`` ("module:function") from ``workers`` processes on ``host:port``, each
    with its own socket where the kernel balances them (else uvicorn's one shared socket); ``options`` go to
    uvicorn's Config."""
    import uvicorn
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    if not balanced_sockets_supported():
        uvicorn.run(app, factory=True, host=host, port=port, workers=workers, **options)
        return

    config = Config(app, factory=True, host=host, port=port, workers=workers, **options)
    claim = PortClaim.on(host, port)
    tally = create_tally(workers)  # the processes keep their shares of the connections even (server/balance.py)
    os.environ[TALLY_ENV] = str(tally)  # inherited by the worker processes, spawned after this
    log.info("driftrec serving on http://%s:%d from %d processes, a socket each", host, claim.getsockname()[1], workers)
    try:
        Multiprocess(config, sockets=[claim]).run()
    finally:
        claim.close()
        os.environ.pop(TALLY_ENV, None)
        tally.unlink(missing_ok=True)
