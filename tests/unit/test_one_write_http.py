"""`driftrec serve`'s HTTP protocol is uvicorn's, with what one event-loop turn writes joined into one write:
a response's headers and body leave together, nothing waits past its turn, and every kind of response
(a body, none, HEAD, a stream, a closed connection) is what plain uvicorn sends — checked against a real
uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from driftrec.llm.runtime import free_port
from driftrec.server.protocol import OneWriteHttp, TurnWrites


class Recorded:
    """The write side of a transport, recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name == "sockname" else default


async def test_the_writes_of_one_turn_leave_in_one_write_at_its_end() -> None:
    raw = Recorded()
    transport = TurnWrites(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"")
    transport.write(memoryview(b"{}"))
    assert raw.writes == [] and transport.get_write_buffer_size() == 40
    await asyncio.sleep(0)  # the turn ends
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.writelines([b"a", b"b"])
    await asyncio.sleep(0)
    assert raw.writes[-1] == b"ab" and len(raw.writes) == 2
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8080)  # the rest is the transport's own


async def test_a_close_sends_what_was_written_first_and_an_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    closed, aborted = Recorded(), Recorded()
    one, other = TurnWrites(closed, loop), TurnWrites(aborted, loop)  # type: ignore[arg-type]
    one.write(b"last words")
    one.close()
    other.write(b"never sent")
    other.abort()
    await asyncio.sleep(0)
    assert closed.writes == [b"last words"] and closed.closed
    assert aborted.writes == [] and aborted.closed


async def _stream() -> AsyncIterator[bytes]:
    for n in range(3):
        yield f"data: {n}\n\n".encode()
        await asyncio.sleep(0.01)


async def _echo(request: Request) -> Response:
    return JSONResponse({"got": (await request.body()).decode()})


APP = Starlette(
    routes=[
        Route("/json", lambda _r: JSONResponse({"x": "y" * 5000})),
        Route("/empty", lambda _r: Response(status_code=204)),
        Route("/stream", lambda _r: StreamingResponse(_stream(), media_type="text/event-stream")),
        Route("/echo", _echo, methods=["POST"]),
        Route("/head", lambda _r: Response(b"12345"), methods=["GET", "HEAD"]),
    ]
)


@contextlib.asynccontextmanager
async def serving(http: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(APP, host="127.0.0.1", port=port, http=http, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # up within 10 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _exchange(base: str) -> list[tuple[int, dict[str, str], bytes]]:
    seen = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:  # one kept-alive connection
        for method, path, body in [
            ("GET", "/json", None),
            ("GET", "/empty", None),
            ("HEAD", "/head", None),
            ("GET", "/stream", None),
            ("POST", "/echo", b"hello"),
            ("GET", "/json", None),
        ]:
            response = await http.request(method, path, content=body)
            headers = {k: v for k, v in response.headers.items() if k != "date"}
            seen.append((response.status_code, headers, response.content))
        closing = await http.get("/json", headers={"Connection": "close"})
        seen.append((closing.status_code, {k: v for k, v in closing.headers.items() if k != "date"}, closing.content))
    return seen


@pytest.mark.parametrize("plain_http", ["httptools", "h11"])
async def test_every_kind_of_response_is_what_uvicorn_sends(plain_http: str) -> None:
    """Against both of uvicorn's own protocols; ours as a class and as the import string `serve` gives."""
    async with serving(plain_http) as plain:
        expected = await _exchange(plain)
    protocol = OneWriteHttp if plain_http == "httptools" else "driftrec.server.protocol:OneWriteHttp"
    async with serving(protocol) as joined:
        assert await _exchange(joined) == expected
    assert expected[3][2] == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and expected[4][2] == b'{"got":"hello"}'
