"""Strict input at the HTTP edge: what the JSON parser and pydantic would let through and then fail on.

- JSON bodies are read once, at most ``max_body_bytes`` (413 past it, before anything is parsed), and
  parsed strictly: no ``NaN``/``Infinity`` and no number that overflows to infinity (``1e400``); every
  string must be valid Unicode (a lone surrogate ``"\\ud800"`` cannot be stored or sent on). A bad body
  is a 422 naming where it went wrong, before any route runs; a body in another media type is a 415.
- Validation errors echo at most a short excerpt of the offending input (a 10 MB field is not sent
  back), and name the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXCERPT = 80  # characters of an offending input echoed back
BODY_KEY = "driftrec.json"  # a scope key: the body and its value, parsed (server/direct.py reads it)


class BadJSON(ValueError):
    def __init__(self, where: str, msg: str):
        super().__init__(msg)
        self.where = where


def _constant(name: str) -> Any:
    raise BadJSON("body", f"{name} is not allowed in JSON (numbers must be finite)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON("body", f"the number {text[:EXCERPT]} is out of range")
    return value


def check_text(value: Any, where: str = "body") -> None:
    """Raise BadJSON at the first string that is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJSON(where, "not valid Unicode (lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_text(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            check_text(item, f"{where}[{n}]")


def parse_strict(body: bytes) -> Any:
    try:
        value = json.loads(body, parse_constant=_constant, parse_float=_float)
    except BadJSON:
        raise
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise BadJSON("body", f"not valid JSON: {str(exc)[:EXCERPT]}") from None
    check_text(value)
    return value


class StrictJSON:
    """ASGI middleware: bounded bodies, strict JSON (see the module doc)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        media = headers.get(b"content-type", b"application/json")
        if body and b"json" not in media.lower():
            await _reply(send, 415, "send the body as JSON (Content-Type: application/json)")
            return
        if body:
            try:
                scope[BODY_KEY] = (body, parse_strict(body))  # parsed once: a route that can reads it from here
            except BadJSON as exc:
                await _reply(send, 422, [{"loc": exc.where.split("."), "msg": str(exc), "type": "json_invalid"}])
                return
        await self.app(scope, replay(body, receive), send)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (already read) once more, then whatever comes next (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _reply(send: Send, status: int, detail: Any) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _short(value: Any) -> Any:
    """What a 422 echoes of the input: JSON-safe (raw bytes of a body sent as another media type become
    text) and at most ``EXCERPT`` characters."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > EXCERPT:
        return text[:EXCERPT] + f"… ({len(text)} characters)"
    return value if isinstance(value, str) else json.loads(text)


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field, with at most a short excerpt of what was sent."""
    errors = []
    for error in exc.errors():
        entry = {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", ""))[:300], "type": error.get("type")}
        if "input" in error:
            entry["input"] = _short(error["input"])
        errors.append(entry)
    return JSONResponse({"detail": errors}, status_code=422)
