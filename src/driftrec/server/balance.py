"""Connections kept even over the API processes of one ``driftrec serve --workers N``.

The kernel hashes each new connection to one process's socket (SO_REUSEPORT, server/processes.py), so 50
long-lived connections split anywhere from 25/25 to 35/15, and the busier process's queue sets the tail
(PostgreSQL, every request computed: p95 43-50 ms spread evenly, 49-73 ms with the kernel's split;
docs/benchmarks.md). Here each process publishes how many connections it holds in a slot of a small shared
file; a process holding more than its share — the ceiling of all the processes' connections over their
number — answers its next request with ``Connection: close``, and the client's next connection is hashed
afresh. Only a process above its share closes, so the split walks to even and then nothing more is closed:
a least-connections balance without a balancer in front. A client sees an ordinary HTTP/1.1 close after a
complete response (every HTTP client reconnects on it); no request is refused or cut.

The file holds a (process id, connections) pair of 64-bit integers per slot. Each process writes only its
own slot; a slot is claimed under ``flock`` when the process's app starts (server/app.py's lifespan), and a
slot whose process has died is claimed again by the supervisor's replacement.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import mmap
import os
import tempfile
from functools import cache
from pathlib import Path

log = logging.getLogger("uvicorn.error")

TALLY_ENV = "DRIFTREC_SERVE_CONNECTION_TALLY"  # set by the supervisor for its worker processes; not a setting
SLOT = 16  # bytes: the process id and its connections, two int64


def create_tally(workers: int) -> Path:
    """In the supervisor: a zeroed file with room for ``workers`` processes (twice, for replacements that
    start before their predecessor's slot is seen free). The caller removes it when serving ends."""
    fd, name = tempfile.mkstemp(prefix="driftrec-connections-")
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(2 * workers * SLOT))
    return Path(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class ConnectionTally:
    """This process's slot in the shared file, and the decision to shed a connection."""

    def __init__(self, path: Path, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
            self._slots = memoryview(self._map).cast("q")  # pid, connections, pid, connections, ...
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self.index = self._claim()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self._leaving = 0  # connections told to close and not yet gone: no longer counted as held

    def _claim(self) -> int:
        for i, pid in enumerate(self._slots[0::2]):  # a killed process's slot: its connections are gone
            if pid and pid != self.pid and not _alive(pid):
                self._slots[2 * i : 2 * i + 2] = memoryview(bytes(SLOT)).cast("q")
        free = [i for i, pid in enumerate(self._slots[0::2]) if pid == 0 or pid == self.pid]
        if not free:
            raise RuntimeError("no free slot in the connection tally")
        index = free[0]
        self._slots[2 * index + 1] = 0
        self._slots[2 * index] = self.pid
        return index

    def publish(self, held: int) -> None:
        """Record that this process now holds ``held`` connections (its server's open ones)."""
        self._slots[2 * self.index + 1] = held - self._leaving

    def should_shed(self, held: int) -> bool:
        """Whether a connection of this process, holding ``held``, should close after its current response:
        this process holds more than the ceiling of the mean over the live processes. A shed connection is
        counted as gone from this process at once (``left`` when it is) but not from the total — its client
        reconnects — so a burst of requests sheds only the excess."""
        mine = held - self._leaving
        slots = self._slots
        total, processes = 0, 0
        for i in range(0, len(slots), 2):
            if slots[i]:
                processes += 1
                total += held if i == 2 * self.index else slots[i + 1]
        if processes < 2 or mine <= -(-total // processes):
            return False
        self._leaving += 1
        slots[2 * self.index + 1] = mine - 1
        return True

    def left(self) -> None:
        """A shed connection has closed (it is no longer among the server's open ones)."""
        self._leaving -= 1

    def release(self) -> None:
        """Free the slot (at exit; a killed process's slot is claimed again by its replacement)."""
        with contextlib.suppress(ValueError):  # already released
            self._slots[2 * self.index + 1] = 0
            self._slots[2 * self.index] = 0
            self._slots.release()
            self._map.close()


@cache
def process_tally() -> ConnectionTally | None:
    """This worker process's slot when its supervisor keeps a tally (``--workers`` above 1 on Linux), else
    None; claimed at the first call (the app's start)."""
    if not (path := os.environ.get(TALLY_ENV)):
        return None
    try:
        tally = ConnectionTally(Path(path))
    except (OSError, RuntimeError, ValueError) as error:
        log.warning("connections not balanced over the processes: %s", error)
        return None
    atexit.register(tally.release)
    return tally
