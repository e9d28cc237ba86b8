"""The access log writes its lines in batches — every line, in order, in far fewer writes — and a stop
writes what is left."""

from __future__ import annotations

import io
import logging
import time

import pytest

from driftrec import serve_logging
from driftrec.server.logs import BatchedLines


class CountedWrites(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def record(n: int) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "GET /v1/items/%d", (n,), None)


def test_lines_wait_for_their_batch_and_all_arrive_in_order() -> None:
    stream = CountedWrites()
    handler = BatchedLines(stream, flush_s=60)  # no periodic write during the test
    for n in range(1000):
        handler.handle(record(n))
    assert stream.getvalue() == ""  # 1000 short lines are under max_bytes: kept
    handler.close()  # a normal stop writes the rest
    assert stream.getvalue().splitlines() == [f"GET /v1/items/{n}" for n in range(1000)]
    assert stream.writes == 1


def test_a_full_batch_is_written_at_once() -> None:
    stream = CountedWrites()
    handler = BatchedLines(stream, flush_s=60, max_bytes=1000)
    for n in range(200):  # ~17 bytes a line: a batch every ~60 lines
        handler.handle(record(n))
    assert 2 <= stream.writes <= 4 and len(stream.getvalue()) >= 3 * 1000 - 100
    handler.close()
    assert stream.getvalue().splitlines() == [f"GET /v1/items/{n}" for n in range(200)]


def test_lines_are_written_within_flush_s_without_more_traffic() -> None:
    stream = CountedWrites()
    handler = BatchedLines(stream, flush_s=0.05)
    handler.handle(record(1))
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "GET /v1/items/1\n"
    handler.close()


def test_a_broken_stream_loses_lines_but_never_raises_into_a_request() -> None:
    stream = CountedWrites()
    handler = BatchedLines(stream, flush_s=60, max_bytes=10)
    stream.close()
    handler.handle(record(1))  # would write: the stream is closed
    handler.close()


def test_the_setting_picks_batches_or_a_write_per_line() -> None:
    batched = serve_logging(0.5)["handlers"]["access"]
    assert batched["class"] == "driftrec.server.logs.BatchedLines" and batched["flush_s"] == 0.5
    assert serve_logging(0)["handlers"]["access"]["class"] == "logging.StreamHandler"
    with pytest.raises(ValueError, match="flush_s"):
        BatchedLines(io.StringIO(), flush_s=0)
