"""A small fake OpenAI-compatible server, used only to drive the client's error paths.

Each test scripts the replies (a queue of behaviours); the server records every request it got and
the peak number of requests in flight. Nothing that claims a feature works is tested against it:
that is what the real vLLM tests are for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


def completion(content: str, finish_reason: str = "stop", logprobs: list[tuple[str, float]] | None = None) -> dict:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
    }
    if logprobs is not None:
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in logprobs]
        choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top}]} if top else {"content": []}
    return {
        "id": "fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [choice],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


@dataclass
class Behaviour:
    status: int = 200
    body: Any = None
    raw: str | None = None
    delay_s: float = 0.0


@dataclass
class FakeOpenAI:
    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=lambda: Behaviour(body=completion("{}")))
    requests: list[dict] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *behaviours: Behaviour) -> FakeOpenAI:
        self.script.extend(behaviours)
        return self

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            self.requests.append(json.loads(await request.body()))
            behaviour = self.script.popleft() if self.script else self.default
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                await asyncio.sleep(behaviour.delay_s)
            finally:
                self.in_flight -= 1
            if behaviour.raw is not None:
                return Response(behaviour.raw, status_code=behaviour.status, media_type="application/json")
            return JSONResponse(behaviour.body or {"error": {"message": "boom"}}, status_code=behaviour.status)

        @app.get("/v1/models")
        async def models() -> dict:
            return {
                "object": "list",
                "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "test", "max_model_len": 2048}],
            }

        return app


@contextlib.asynccontextmanager
async def serve_fake(fake: FakeOpenAI):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        fake.port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            fake.app(),
            host="127.0.0.1",
            port=fake.port,
            log_level="error",
            timeout_graceful_shutdown=1,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes no started event
        await asyncio.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        await task
