"""The service's log lines: uvicorn's, driftrec's own, and an access log written in batches.

An access-log line is one write to the log stream per request: measured on MovieLens at 50 clients
(docs/benchmarks.md) the line cost ~7 % of a computed recommendation's throughput, most of it the write
rather than the formatting. ``BatchedLines`` keeps each line and writes what waits at most every
``flush_s`` seconds (or at once past ``max_bytes``), one write for many requests, as nginx's
``access_log ... buffer= flush=`` does. Every line is still written, in order; a normal stop writes the rest;
a process killed outright (SIGKILL) loses at most its last ``flush_s`` seconds of access lines. driftrec's
own lines and uvicorn's errors are written at once, as before.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any, TextIO


class BatchedLines(logging.StreamHandler):
    """A stream handler that writes its lines in batches (see the module doc)."""

    def __init__(self, stream: TextIO | None = None, flush_s: float = 1.0, max_bytes: int = 64 << 10):
        super().__init__(stream)
        if flush_s <= 0:
            raise ValueError("flush_s must be positive (a write per line is logging.StreamHandler)")
        self.flush_s = flush_s
        self.max_bytes = max_bytes
        self._waiting: list[str] = []
        self._size = 0
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_every_interval, name="driftrec-access-log", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the line (``Handler.handle`` holds the handler's lock around this); write the batch once it
        is ``max_bytes`` long."""
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)
        self._size += len(line)
        if self._size >= self.max_bytes:
            self._write()

    def flush(self) -> None:
        """Write every line kept so far."""
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write()

    def close(self) -> None:
        self._closed.set()
        self.flush()
        super().close()

    def _write(self) -> None:
        """The kept lines in one write (the caller holds the lock)."""
        if not self._waiting:
            return
        text = "".join(self._waiting)
        self._waiting.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the lines are lost, serving goes on
            pass

    def _write_every_interval(self) -> None:
        while not self._closed.wait(self.flush_s):
            self.flush()


def serve_logging(access_flush_s: float = 1.0) -> dict[str, Any]:
    """uvicorn's logging configuration, plus driftrec's own INFO lines through the same handler (they name
    users only by pseudonym), and the access lines written in batches every ``access_flush_s`` seconds
    (0: a write per line)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["driftrec"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    if access_flush_s > 0:
        config["handlers"]["access"] |= {"class": f"{__name__}.BatchedLines", "flush_s": access_flush_s}
    return config
