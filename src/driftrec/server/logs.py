"""The service's log lines: uvicorn's, driftrec's own, and an access log that costs little per request.

A line per request through Python's logging (a record, uvicorn's filters and formatter, a write and a flush)
cost ~9 % of a computed recommendation's throughput on MovieLens at 50 clients (docs/benchmarks.md): the
formatting about half of it, the write per line the rest. So in ``driftrec serve``:

- ``AccessLines`` (the access logger's handler) keeps lines and writes what waits at most every ``flush_s``
  seconds (or at once past ``max_bytes``), one write for many requests, as nginx's ``access_log ... buffer=
  flush=`` does. Every line is written, in order; a normal stop writes the rest (the app's shutdown calls
  ``flush_access_lines``: uvicorn's process skips ``atexit`` on SIGTERM); a process killed outright (SIGKILL)
  loses at most its last ``flush_s`` seconds of access lines. ``flush_s`` 0: a write per line.
- ``AccessWriter`` is what uvicorn's HTTP protocol calls as its access logger (server/protocol.py): it makes
  the same line uvicorn's formatter would (``tests/unit/test_access_log.py`` holds them equal) and hands it to
  that handler, with no log record. It applies ``RedactUsers`` itself; a logger with any other filter, or
  another handler, is logged through ``logging`` as before.

Writing lines in batches was measured once before and dropped (2026-12-06): with a tenth of requests being
clicks it raised the p99, because the per-line write was where the event loop let go of the GIL for the
store-write threads, whose SQLite write then held its lock across GIL waits. A write holds the lock for one
call now (memory/db.py), and without per-line writes the p99 under clicks stays where it was (measured).
driftrec's own lines and uvicorn's errors are written at once, as ever.
"""

from __future__ import annotations

import copy
import http
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import unquote

_USER_PATH = re.compile(r"(/v1/users/)([^/?]+)")


class RedactUsers(logging.Filter):
    """Access-log lines carry the user's pseudonym, not their id, so a forgotten user is not in the log."""

    def __init__(self, tag: Callable[[str], str]):
        super().__init__()
        self.tag = tag

    def path(self, path: str) -> str:
        """``path`` with the user in a ``/v1/users/{user}`` route replaced by ``~`` and their pseudonym."""
        return _USER_PATH.sub(lambda m: m.group(1) + "~" + self.tag(unquote(m.group(2))), path)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], self.path(args[2]), *args[3:])
        return True


class AccessLines(logging.StreamHandler):
    """A stream handler that writes its lines in batches (see the module doc); ``flush_s`` 0: at once."""

    def __init__(self, stream: TextIO | None = None, flush_s: float = 1.0, max_bytes: int = 64 << 10):
        super().__init__(stream)
        if flush_s < 0:
            raise ValueError("flush_s must be 0 (a write per line) or positive")
        self.flush_s = flush_s
        self.max_bytes = max_bytes
        self._waiting: list[str] = []
        self._size = 0
        self._stopped = threading.Event()
        if flush_s:
            writer = threading.Thread(target=self._write_every_interval, name="driftrec-access-log", daemon=True)
            writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add(line)  # Handler.handle holds the (reentrant) lock around this

    def add(self, line: str) -> None:
        """Keep ``line`` (without its line end); the batch is written once it is ``max_bytes`` long."""
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._waiting.append(line + self.terminator)
            self._size += len(line) + 1
            if self._size >= self.max_bytes or not self.flush_s:
                self._write()

    def flush(self) -> None:
        """Write every line kept so far."""
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        self._stopped.set()
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
        except (OSError, ValueError):  # a closed or broken stream: these lines are lost, serving goes on
            pass

    def _write_every_interval(self) -> None:
        while not self._stopped.wait(self.flush_s):
            self.flush()


_PHRASES = {int(s): s.phrase for s in http.HTTPStatus}


class AccessWriter:
    """uvicorn's access logger as its HTTP protocol calls it (``info(message, client, method, path, version,
    status)``), writing the line uvicorn's ``AccessFormatter`` makes (without colours) to ``AccessLines``."""

    def __init__(self, logger: logging.Logger, handler: AccessLines):
        self.logger = logger
        self.handler = handler

    @classmethod
    def serving(cls, logger: logging.Logger) -> AccessWriter | None:
        """The writer for ``logger`` when its lines go only to one ``AccessLines`` with uvicorn's plain access
        format; else None (logged through ``logging``)."""
        from uvicorn.logging import AccessFormatter

        handlers = logger.handlers
        if logger.propagate or len(handlers) != 1 or not isinstance(handlers[0], AccessLines):
            return None
        formatter = handlers[0].formatter
        if type(formatter) is not AccessFormatter or formatter.use_colors or formatter._fmt != ACCESS_FORMAT:
            return None
        return cls(logger, handlers[0])

    def info(self, message: str, *args: Any) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        if len(args) != 5 or not isinstance(args[2], str) or not isinstance(args[4], int):
            logger.info(message, *args)
            return
        client, method, path, version, status = args
        for kept in logger.filters:
            if type(kept) is not RedactUsers:  # a filter this writer does not know: logging's own path
                logger.info(message, *args)
                return
            path = kept.path(path)
        if self.handler.level > logging.INFO:
            return
        phrase = _PHRASES.get(status, "")
        self.handler.add(f'INFO:     {client} - "{method} {path} HTTP/{version}" {status} {phrase}')


ACCESS_FORMAT = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'


def flush_access_lines() -> None:
    """Write the access lines that wait (the app's shutdown calls it, after the last response): a uvicorn
    process stopped by SIGTERM ends by raising the signal again once it has shut down, so it exits without
    running ``atexit`` and ``logging.shutdown`` never flushes."""
    for handler in logging.getLogger("uvicorn.access").handlers:
        if isinstance(handler, AccessLines):
            handler.flush()


def serve_logging(access_flush_s: float = 1.0) -> dict[str, Any]:
    """uvicorn's logging configuration, plus driftrec's own INFO lines through the same handler (they name
    users only by pseudonym), and the access lines written together every ``access_flush_s`` seconds
    (0: a write per line)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["driftrec"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["handlers"]["access"] |= {"class": f"{__name__}.AccessLines", "flush_s": access_flush_s}
    return config
