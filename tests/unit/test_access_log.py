"""`driftrec serve`'s access log: the line it writes without a log record is the line uvicorn's formatter
makes through `logging`, users named by pseudonym; lines wait for one write together (at most `flush_s`), and
nothing kept is lost at a flush or a close. Any filter it does not know sends the line through `logging`."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import pytest
from uvicorn.logging import AccessFormatter

from driftrec.server.logs import (
    ACCESS_FORMAT,
    AccessLines,
    AccessWriter,
    RedactUsers,
    flush_access_lines,
    serve_logging,
)

MESSAGE = '%s - "%s %s HTTP/%s" %d'  # what uvicorn's response cycle logs


@pytest.fixture
def access() -> Iterator[tuple[logging.Logger, AccessLines, io.StringIO]]:
    """A logger set up as ``serve_logging`` sets up uvicorn's access logger, writing into a string."""
    stream = io.StringIO()
    handler = AccessLines(stream, flush_s=0)
    handler.setFormatter(AccessFormatter(ACCESS_FORMAT, use_colors=False))
    logger = logging.getLogger(f"test.access.{id(stream)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    logger.addFilter(RedactUsers(lambda user: f"tag-of-{user}"))
    yield logger, handler, stream
    handler.close()
    logger.handlers.clear()
    logger.filters.clear()


@pytest.mark.parametrize(
    "line",
    [
        ("127.0.0.1:50514", "POST", "/v1/users/ada/recommendations", "1.1", 200),
        ("10.0.0.7:80", "GET", "/v1/users/ada%20l/profile?x=1", "1.1", 404),
        ("127.0.0.1:1", "DELETE", "/v1/users/b%2Fc", "1.0", 422),
        ("[::1]:9", "GET", "/health", "1.1", 599),  # no phrase for this status
    ],
)
def test_the_writer_writes_the_line_logging_would(
    access: tuple[logging.Logger, AccessLines, io.StringIO], line: tuple[object, ...]
) -> None:
    logger, handler, stream = access
    logger.handlers[:] = [handler]  # pytest adds its capture handlers to loggers that do not propagate
    writer = AccessWriter.serving(logger)
    assert writer is not None
    writer.info(MESSAGE, *line)
    logger.info(MESSAGE, *line)  # through a record, RedactUsers and uvicorn's AccessFormatter
    fast, logged = stream.getvalue().splitlines()
    assert fast == logged
    assert "/v1/users/" not in fast or "/v1/users/~tag-of-" in fast  # the pseudonym, never the user id


def test_a_filter_the_writer_does_not_know_decides_through_logging(
    access: tuple[logging.Logger, AccessLines, io.StringIO],
) -> None:
    logger, handler, stream = access
    logger.handlers[:] = [handler]  # as above
    writer = AccessWriter.serving(logger)
    assert writer is not None
    logger.addFilter(lambda record: record.args[4] != 200)  # type: ignore[index]  # drop the 200s
    writer.info(MESSAGE, "127.0.0.1:5", "GET", "/v1/users/ada/profile", "1.1", 200)
    writer.info(MESSAGE, "127.0.0.1:5", "GET", "/v1/users/ada/profile", "1.1", 404)
    assert stream.getvalue() == 'INFO:     127.0.0.1:5 - "GET /v1/users/~tag-of-ada/profile HTTP/1.1" 404 Not Found\n'
    logger.setLevel(logging.WARNING)  # and its level
    writer.info(MESSAGE, "127.0.0.1:5", "GET", "/health", "1.1", 404)
    assert stream.getvalue().count("\n") == 1


def test_lines_wait_for_one_write_and_a_flush_or_close_writes_every_one() -> None:
    class Counted(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = Counted()
    handler = AccessLines(stream, flush_s=60, max_bytes=100)
    for n in range(3):
        handler.add(f"line {n}")
    assert stream.getvalue() == ""  # kept: the next write is at most 60 s away
    handler.flush()
    assert stream.getvalue() == "line 0\nline 1\nline 2\n" and stream.writes == 1
    handler.add("x" * 120)  # past max_bytes: written at once
    assert stream.getvalue().endswith("x" * 120 + "\n") and stream.writes == 2
    handler.add("last")
    handler.close()  # a normal stop writes what waits
    assert stream.getvalue().endswith("\nlast\n") and stream.writes == 3


def test_lines_are_written_within_flush_s_without_a_flush() -> None:
    stream = io.StringIO()
    handler = AccessLines(stream, flush_s=0.05)
    try:
        handler.add("soon")
        for _ in range(200):
            if stream.getvalue():
                break
            time.sleep(0.01)
        assert stream.getvalue() == "soon\n"
    finally:
        handler.close()


def test_other_set_ups_are_logged_through_logging() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.access.other")
    logger.propagate = False
    try:
        logger.handlers[:] = [logging.StreamHandler(stream)]
        assert AccessWriter.serving(logger) is None  # not driftrec's handler
        coloured = AccessLines(stream, flush_s=0)
        coloured.setFormatter(AccessFormatter(ACCESS_FORMAT, use_colors=True))
        logger.handlers[:] = [coloured]
        assert AccessWriter.serving(logger) is None  # colours: uvicorn's formatter makes them
        coloured.setFormatter(AccessFormatter(ACCESS_FORMAT, use_colors=False))
        logger.propagate = True
        assert AccessWriter.serving(logger) is None  # the root logger's handlers would see the line too
        logger.propagate = False
        assert AccessWriter.serving(logger) is not None
    finally:
        logger.handlers.clear()


def test_serve_logging_batches_the_access_lines_unless_told_not_to() -> None:
    assert serve_logging()["handlers"]["access"]["class"] == "driftrec.server.logs.AccessLines"
    assert serve_logging()["handlers"]["access"]["flush_s"] == 1.0
    assert serve_logging(0)["handlers"]["access"]["flush_s"] == 0
    with pytest.raises(ValueError, match="flush_s"):
        AccessLines(io.StringIO(), flush_s=-1)


def test_the_apps_shutdown_writes_what_waits() -> None:
    """uvicorn re-raises SIGTERM once it has shut down, so its process exits without ``atexit``: the app's
    shutdown writes the waiting lines itself (``flush_access_lines``; the two-process serve test counts them)."""
    stream = io.StringIO()
    handler = AccessLines(stream, flush_s=60)
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(handler)
    try:
        handler.add("waiting")
        assert stream.getvalue() == ""
        flush_access_lines()
        assert stream.getvalue() == "waiting\n"
    finally:
        logger.removeHandler(handler)
        handler.close()
