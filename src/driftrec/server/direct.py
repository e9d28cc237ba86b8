"""A hot route served without FastAPI's per-request machinery, with FastAPI's route behind it for the rest.

A recommendation is the service's most frequent request, and on a computed answer FastAPI's generic work per
request (dependency solving, the body read and parsed again, validation wrappers, the router's walk past
every route declared before it) cost about a sixth of a served request's CPU (docs/benchmarks.md).
``DirectRoute`` sits first in the router and answers a request that FastAPI would accept as is — the same
validation of the path and the body (pydantic, python mode, as FastAPI runs it), the same key check and rate
limit, the same endpoint function, and exceptions left to the same handlers. Anything else (a body that
does not validate, one in another media type, a missing body) goes to the route FastAPI declared, which
answers as it always did (its 422 names the field); that route is also what the OpenAPI schema shows.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from driftrec.server.strict import BODY_KEY, replay

# (request, parsed body) -> the response, or None: not a request to answer here (FastAPI's route answers)
Handler = Callable[[Request, Any], Awaitable[Response | None]]


class DirectRoute(BaseRoute):
    """``route``'s method and path, answered by ``handler``; what it declines, by ``route`` itself."""

    def __init__(self, route: APIRoute, handler: Handler):
        self.route = route
        self.handler = handler
        self.path = route.path

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = self.route.matches(scope)
        return (match, child) if match is Match.FULL else (Match.NONE, {})  # a wrong method: the route's 405

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        return self.route.url_path_for(name, **path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, value = await _json_body(scope, receive)
        response = None if value is None else await self.handler(Request(scope, receive), value)
        if response is None:
            await self.route.handle(scope, replay(body, receive), send)
        else:
            await response(scope, receive, send)


async def _json_body(scope: Scope, receive: Receive) -> tuple[bytes, Any]:
    """The request's body and its JSON value; None when it is empty or not sent as ``application/json``
    (FastAPI would not parse it as JSON, or would answer an error: its route decides)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    media = next((value for name, value in scope.get("headers") or [] if name == b"content-type"), None)  # the first
    if not body or (media is not None and media.split(b";")[0].strip().lower() != b"application/json"):
        return body, None
    parsed = scope.get(BODY_KEY)
    if parsed is not None and parsed[0] == body:  # StrictJSON's parse of these very bytes (the same object, as sent)
        return body, parsed[1]
    try:
        return body, json.loads(body)
    except ValueError:
        return body, None
