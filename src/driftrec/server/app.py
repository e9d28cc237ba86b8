"""The HTTP service: the Recommender's operations as JSON endpoints, chat as server-sent events.

A thin shell: validation is pydantic's (422 names the field), domain errors map to 4xx, an LLM
failure never surfaces (recommendations degrade, flagged), and the OpenAPI schema is FastAPI's.
Bearer keys: a shared admin key (``DRIFTREC_API_KEY``) and keys made with ``driftrec keys create``, admin
or scoped to one user (403 on every other user's route); per-key rate limits (429 + ``Retry-After``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StrictBool, TypeAdapter, ValidationError

from driftrec.agent import InvalidEvent, Recommender, StoreUnavailable, UnknownItem, VectorStoreUnavailable
from driftrec.config import Settings, load_settings
from driftrec.models import (
    JSON_NUMBER,
    Filters,
    Interaction,
    InterestProfile,
    Item,
    ItemId,
    JsonInt,
    ProfileEdits,
    RecommendationList,
    Text,
    UserId,
)
from driftrec.server.balance import process_tally
from driftrec.server.direct import DirectRoute
from driftrec.server.limits import RateLimiter
from driftrec.server.logs import RedactUsers, flush_access_lines
from driftrec.server.strict import StrictJSON, validation_error

log = logging.getLogger("driftrec.server")
STORE_RETRY_AFTER_S = 5  # what a 503 from the memory store tells clients to wait
WEB = Path(__file__).parent / "web"  # the page's files, shipped with the package (no build step, no CDN)
ANY_ID = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^/\x00-\x1f]+$")]


class EventsIn(BaseModel):
    events: list[Interaction] = Field(min_length=1, max_length=10_000)


class EventsOut(BaseModel):
    received: int
    new: int


class RecommendIn(BaseModel):
    k: JsonInt = Field(default=10, ge=1, le=100)
    query: Text | None = Field(default=None, max_length=2000)
    filters: Filters | None = None
    explain: StrictBool = False
    exclude: list[ANY_ID] = Field(default_factory=list, max_length=1000)


class FeedbackIn(BaseModel):
    item: ANY_ID
    signal: Annotated[str, Field(pattern="^(like|dislike|click|view|skip|purchase)$")] | None = None
    rating: Annotated[float, Field(ge=0, le=10), JSON_NUMBER] | None = None
    text: Text | None = Field(default=None, max_length=4000)
    at: datetime | None = None


class ChatIn(BaseModel):
    message: Text = Field(min_length=1, max_length=4000)


class Rejected(BaseModel):
    name: str
    kind: str
    reason: str


class RefreshOut(BaseModel):
    status: str  # updated | unchanged | partial | failed
    updated: bool
    summarized: int
    failed: int
    remaining: int  # closed sessions left to the background upkeep
    rejected: list[Rejected]
    error: str | None
    error_type: str | None
    profile: InterestProfile


class ForgetOut(BaseModel):
    """What each store held of the user, now deleted."""

    rows: dict[str, int]
    vectors: dict[str, int]
    llm: dict[str, int]
    files: dict[str, int] = {}  # saved candidate indexes that held their events (deleted, rebuilt without)


class Problem(BaseModel):
    """An error that is not about one field (422 lists the fields instead)."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key"},
    403: {"model": Problem, "description": "The API key belongs to another user"},
    404: {"model": Problem, "description": "No such item"},
    413: {"model": Problem, "description": "Request body too large"},
    415: {"model": Problem, "description": "The body is not JSON"},
    429: {"model": Problem, "description": "Rate limit reached (see Retry-After)"},
    503: {
        "model": Problem,
        "description": "The memory store (or, for search, the vector store) is unreachable; nothing was lost, "
        "retry (see Retry-After)",
    },
}


class Health(BaseModel):
    """Open to anyone: says only whether the service is fully up (no URLs, no model, no counts)."""

    status: Literal["ok", "degraded", "unavailable"]


async def rec_of(request: Request) -> Recommender:
    """The app's recommender. A coroutine: FastAPI runs a plain function dependency in a worker thread,
    a hop per request for an attribute read."""
    return request.app.state.rec


Rec = Annotated[Recommender, Depends(rec_of)]  # module level: FastAPI resolves annotations by name
BEARER = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
USER_ID = TypeAdapter(UserId)  # a path's user, validated as FastAPI validates it (server/direct.py)


@dataclass(frozen=True)
class Access:
    """Who is calling: a user's own key (``user`` set) or an admin (every user); ``caller`` names the
    rate-limit bucket (key id, the shared key, or the client address when the service is open)."""

    user: str | None
    caller: str

    def allows(self, user: str) -> bool:
        return self.user is None or self.user == user


def create_app(
    recommender: Recommender | None = None,
    *,
    api_key: str | None = None,
    max_body_bytes: int = 2 << 20,
    settings: Settings | None = None,
) -> FastAPI:
    """The app; with no ``recommender`` given, one is built from ``settings`` (or the environment). One
    that is not started yet is started with the app and stopped with it."""
    settings = recommender.settings if recommender is not None else settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rec = recommender or Recommender.from_settings(settings)
        owned = not rec.started
        if owned:
            await rec.start()
        app.state.rec = rec
        # What start-up built (catalog, indexes, clients: ~200k objects on MovieLens) lives as long as the
        # process: moved out of the collector's sight, a full collection takes ~25 ms instead of ~125 ms, a
        # pause every request in flight would wait for (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        if rec.settings.api.gc_threshold:
            # Requests in flight keep their objects alive across awaits: at Python's default (a young
            # collection every 700 allocations) they are scanned again and again and promoted to the old
            # generation, and CPU per recommendation doubles from 1 to 10 concurrent requests (1.2 -> 2.8 ms);
            # collecting young objects every 20k allocations keeps it near the one-request cost.
            _, middle, old = before = gc.get_threshold()
            gc.set_threshold(rec.settings.api.gc_threshold, max(middle, 20), max(old, 20))
        process_tally()  # under `serve --workers N`: this process counts in the connection balance from the start
        redact = RedactUsers(rec._require().tag)
        access = logging.getLogger("uvicorn.access")
        access.addFilter(redact)
        try:
            yield
        finally:
            flush_access_lines()  # after the last response; before the process exits without atexit (logs.py)
            access.removeFilter(redact)
            if rec.settings.api.gc_threshold:
                gc.set_threshold(*before)
            if owned:
                await rec.aclose()

    docs = settings.api.docs
    app = FastAPI(
        title="driftrec",
        version="0.1.0",
        description="LLM-native recommendations from a drifting long-term profile and short-term sessions.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_middleware(StrictJSON, max_body_bytes=max_body_bytes)
    limiter = RateLimiter(settings.api.rate_per_minute, settings.api.rate_burst)
    shared = api_key or (settings.api.key.get_secret_value() if settings.api.key is not None else None)

    async def authorized(request: Request, credentials: Credentials) -> Access:
        """The shared admin key (``api_key``, else ``DRIFTREC_API_KEY``) or a key from ``driftrec keys``;
        with neither configured the service is open. Then the caller's rate limit."""
        token = credentials.credentials if credentials else None
        given = token.encode("utf-8", "surrogateescape") if token else b""
        if shared is not None and token and secrets.compare_digest(given, shared.encode("utf-8")):
            access = Access(None, "key:shared")
        else:
            key, required = await request.app.state.rec.keys().acheck(token, trust_s=settings.api.key_poll_s)
            if key is not None:
                access = Access(key.user, f"key:{key.id}")
            elif required or shared is not None:
                raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})
            else:
                access = Access(None, f"addr:{request.client.host if request.client else '?'}")
        wait = limiter.take(access.caller)
        if wait:
            raise HTTPException(
                429,
                f"rate limit: {limiter.per_minute} requests a minute per key; retry in {wait:.1f}s",
                headers={"Retry-After": limiter.retry_after(wait)},
            )
        return access

    async def for_user(user: UserId, access: Access = Depends(authorized)) -> Access:
        """A user's key reaches only that user's routes (403 for anyone else's)."""
        if not access.allows(user):
            raise HTTPException(403, "this API key belongs to another user")
        return access

    auth = [Depends(authorized)]  # any valid key (catalog routes)
    own = [Depends(for_user)]  # the path's user, or an admin key
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]

    @app.exception_handler(InvalidEvent)
    async def invalid_event(_request: Request, exc: InvalidEvent) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": exc.loc, "msg": str(exc), "type": "value_error"}]}, status_code=422)

    @app.exception_handler(UnknownItem)
    async def unknown_item(_request: Request, exc: UnknownItem) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        """The database is down or the disk is full: a 503 the client can retry; the cause goes to the log
        (it may name hosts), not to the caller."""
        log.warning("memory store unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the memory store is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        )

    @app.exception_handler(VectorStoreUnavailable)
    async def vectors_unavailable(_request: Request, exc: VectorStoreUnavailable) -> JSONResponse:
        """Chroma is down: routes that cannot answer without it (search) get a 503 to retry;
        recommendations do not come here (they degrade to the sources that answer)."""
        log.warning("vector store unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the vector store is unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page: chat, recommendations with feedback, the editable profile and its timeline."""
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/web", StaticFiles(directory=WEB), name="web")

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health(rec: Rec) -> Health | JSONResponse:
        """ok: memory, retrieval and the LLM are there; degraded: answers come without the LLM or without
        the vector store (Chroma down); unavailable (503): the memory store does not answer (a load balancer
        takes this process out)."""
        if not await rec.store_ok():
            return JSONResponse(Health(status="unavailable").model_dump(), status_code=503)
        return Health(status="ok" if rec.llm is not None and await rec.vectors_ok() else "degraded")

    @app.post("/v1/events", responses=ERRORS, response_model=EventsOut)
    async def observe(body: EventsIn, rec: Rec, access: Access = Depends(authorized)) -> EventsOut:
        """A batch of events, stored durably (replays count as not new). A user's key may send only that
        user's events."""
        for n, event in enumerate(body.events):
            if not access.allows(event.user):
                raise HTTPException(403, f"events[{n}].user: this API key belongs to another user")
        return EventsOut(received=len(body.events), new=await rec.observe(body.events))

    @app.post("/v1/users/{user}/recommendations", responses=ERRORS, response_model=RecommendationList, dependencies=own)
    async def recommend(user: UserId, body: RecommendIn, rec: Rec) -> Response:
        # serialized once, by the model itself: the JSON FastAPI would send, without validating the answer
        # again on the way out (a tenth of a served request's CPU; tests/integration/test_http.py compares),
        # and the text kept for a repeat, which is then sent as kept
        text = await rec.recommend_json(
            user, body.k, query=body.query, filters=body.filters, explain=body.explain, exclude=body.exclude
        )
        return Response(text, media_type="application/json")

    async def recommend_direct(request: Request, value: Any) -> Response | None:
        """``recommend`` for a request FastAPI would take as is, checked as FastAPI checks it, without its
        per-request machinery; None for any other (the declared route answers it: server/direct.py)."""
        try:
            user = USER_ID.validate_python(request.path_params["user"])
            body = RecommendIn.model_validate(value)
        except ValidationError:
            return None
        await for_user(user, await authorized(request, await BEARER(request)))
        return await recommend(user, body, request.app.state.rec)

    declared = next(r for r in app.router.routes if isinstance(r, APIRoute) and r.endpoint is recommend)
    app.router.routes.insert(0, DirectRoute(declared, recommend_direct))  # first: no walk past other routes

    @app.post("/v1/users/{user}/feedback", responses=ERRORS, response_model=Interaction, dependencies=own)
    async def feedback(user: UserId, body: FeedbackIn, rec: Rec) -> Interaction:
        if (body.signal is None) == (body.rating is None):
            raise InvalidEvent("give exactly one of signal or rating", ["body", "signal"])
        signal: Any = body.rating if body.rating is not None else body.signal
        return await rec.feedback(user, body.item, signal, text=body.text, at=body.at)

    @app.get("/v1/users/{user}/profile", responses=ERRORS, response_model=InterestProfile, dependencies=own)
    async def profile(user: UserId, rec: Rec) -> InterestProfile:
        return await rec.profile(user)

    @app.get(
        "/v1/users/{user}/profile/history", responses=ERRORS, response_model=list[InterestProfile], dependencies=own
    )
    async def profile_history(user: UserId, rec: Rec) -> list[InterestProfile]:
        return await rec.profile_history(user)

    @app.post("/v1/users/{user}/profile/edits", responses=ERRORS, response_model=InterestProfile, dependencies=own)
    async def edit_profile(user: UserId, body: ProfileEdits, rec: Rec) -> InterestProfile:
        """The user corrects their profile: add or remove an interest or a dislike (a catalog genre). The
        new version is returned; the edit holds through later LLM updates until the user's own events
        after it say otherwise."""
        return await rec.edit_profile(user, body.edits)

    @app.get("/v1/genres", responses=ERRORS, response_model=list[str], dependencies=auth)
    async def genres(rec: Rec) -> list[str]:
        """What an interest or dislike can be named."""
        return rec.genres()

    @app.get("/v1/items/{item}", responses=ERRORS, response_model=Item, dependencies=auth)
    async def item(item: ItemId, rec: Rec) -> Item:
        return rec.item(item)

    @app.post("/v1/users/{user}/profile/refresh", responses=ERRORS, response_model=RefreshOut, dependencies=own)
    async def refresh(user: UserId, rec: Rec) -> RefreshOut:
        """Summarize closed sessions and update the profile; at most ``memory_refresh_max_sessions`` sessions
        per request, the rest are left to the background upkeep (``remaining``)."""
        result = await rec.refresh_profile(user, max_sessions=rec.settings.memory.refresh_max_sessions)
        return RefreshOut(
            status=result.status,
            updated=result.updated,
            summarized=result.summarized,
            failed=result.failed,
            remaining=result.remaining,
            rejected=[Rejected(name=r.name, kind=r.kind, reason=r.reason) for r in result.rejected],
            error=result.error,
            error_type=result.error_type,
            profile=result.profile,
        )

    @app.delete("/v1/users/{user}", responses=ERRORS, response_model=ForgetOut, dependencies=own)
    async def forget(user: UserId, rec: Rec) -> ForgetOut:
        """Forget the user everywhere; says how many rows, vectors and LLM records each store held."""
        report = await rec.forget_user(user)
        return ForgetOut(rows=report.rows, vectors=report.vectors, llm=report.llm, files=report.files)

    @app.post("/v1/users/{user}/chat", responses=ERRORS, dependencies=own, response_class=StreamingResponse)
    async def chat(user: UserId, body: ChatIn, rec: Rec) -> StreamingResponse:
        """Server-sent events: ``data: {"delta": "..."}`` per piece, then ``data: {"done": true, "mode": ...,
        "action": ..., "degraded": ...}`` (degraded: why native tool calling fell back to plan mode)."""

        async def events() -> AsyncIterator[str]:
            async for piece in rec.chat(user, body.message):
                yield f"data: {json.dumps({'delta': piece})}\n\n"
            turn = rec.last_turn(user)
            how = {"mode": turn.mode, "action": turn.action, "degraded": turn.degraded} if turn else {}
            yield f"data: {json.dumps({'done': True, **how})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
