"""The recommendations route answers a plain valid request without FastAPI's per-request machinery
(server/direct.py), and every request, valid or not, gets the very answer FastAPI's declared route gives.

Two in-process apps on one real Recommender (real Chroma, the MovieLens catalog, the SQLite store and a real
PostgreSQL), without an LLM: one as served, one with the direct route taken out, asked the same requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.server import create_app
from driftrec.server.direct import DirectRoute
from tests.conftest import copy_of, on_backend

KEY = "s3cret"
JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {KEY}", **JSON}


@pytest.fixture(scope="module")
def apps(
    settings: Settings, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory, module_database_url: str | None
) -> Iterator[tuple[TestClient, TestClient, list[str]]]:
    """(served app, the same without its direct route, the requests the declared route answered in the
    served one)."""
    data = copy_of(seeded_data, tmp_path_factory.mktemp("http-direct"))
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "api_rate_per_minute": 0})
    rec = Recommender(on_backend(own, module_database_url, data), llm=None)
    served, declared_only = create_app(rec, api_key=KEY), create_app(rec, api_key=KEY)
    direct = next(r for r in served.router.routes if isinstance(r, DirectRoute))
    declared_only.router.routes[:] = [r for r in declared_only.router.routes if not isinstance(r, DirectRoute)]
    passed_on: list[str] = []
    handle = direct.route.handle

    async def counted(scope, receive, send):  # the declared route, when the direct one declines
        passed_on.append(scope["path"])
        await handle(scope, receive, send)

    direct.route.handle = counted
    with TestClient(served) as a, TestClient(declared_only) as b:
        yield a, b, passed_on


def same_reply(a: TestClient, b: TestClient, method: str, path: str, body: bytes | None, headers: dict) -> int:
    """Both apps' reply to one request, asserted equal (status, the headers a client acts on, the JSON
    but for the seconds the answer took and whether it was kept); returns the status."""
    first, second = (c.request(method, path, content=body, headers=headers) for c in (a, b))
    assert first.status_code == second.status_code, (path, body, first.text, second.text)
    for header in ("content-type", "www-authenticate", "retry-after", "allow"):
        assert first.headers.get(header) == second.headers.get(header), header
    mine, theirs = first.json(), second.json()
    if isinstance(mine, dict) and "items" in mine:
        for answer in (mine, theirs):
            answer.pop("seconds"), answer.pop("cached")
    assert mine == theirs, (path, body)
    return first.status_code


VALID = [
    {"k": 5},
    {"k": 3, "filters": {"genres": ["Comedy"], "year_min": 1990}},
    {"k": 4, "exclude": ["50", "181"], "explain": False},
    {"k": 2, "query": "a comedy from the 90s"},
    {"k": 10, "unknown": "ignored as FastAPI ignores it"},
]


@pytest.mark.parametrize("body", VALID)
def test_a_valid_request_is_answered_directly_with_the_declared_routes_answer(apps, body: dict) -> None:
    a, b, passed_on = apps
    before = len(passed_on)
    for user in ("1", "7", "someone-new"):
        assert same_reply(a, b, "POST", f"/v1/users/{user}/recommendations", json.dumps(body).encode(), AUTH) == 200
    assert len(passed_on) == before  # none went the declared way


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/v1/users/1/recommendations", b'{"k": 0}', AUTH, 422),
        ("/v1/users/1/recommendations", b'{"k": "5"}', AUTH, 422),
        ("/v1/users/1/recommendations", b'{"k": true}', AUTH, 422),
        ("/v1/users/1/recommendations", b'{"filters": {"genres": "Comedy"}}', AUTH, 422),
        ("/v1/users/1/recommendations", b"[]", AUTH, 422),
        ("/v1/users/1/recommendations", b"null", AUTH, 422),
        ("/v1/users/1/recommendations", b"", AUTH, 422),  # no body at all: FastAPI's "Field required"
        ("/v1/users/%7F/recommendations", b'{"k": 5}', AUTH, 422),  # the path's user
        ("/v1/users/1/recommendations", b'{"k": 0}', JSON, 401),  # the key is checked before the body
        ("/v1/users/1/recommendations", b'{"k": 5}', {"Authorization": f"Basic {KEY}", **JSON}, 401),
        ("/v1/users/1/recommendations", b'{"k": 5}', {"Content-Type": "application/vnd.api+json"}, 401),
        ("/v1/users/1/recommendations", b'{"k": 5}', {**AUTH, "Content-Type": "text/plain"}, 415),
        # two media types: FastAPI reads the first (text: not JSON, a 422), whatever comes after it
        ("/v1/users/1/recommendations", b'{"k": 5}', [*AUTH.items(), ("content-type", "text/plain")][::-1], 422),
    ],
)
def test_any_other_request_gets_the_declared_routes_reply(
    apps, path: str, body: bytes, headers: dict, status: int
) -> None:
    a, b, _ = apps
    assert same_reply(a, b, "POST", path, body, headers) == status


def test_what_the_direct_route_declines_goes_to_the_declared_route(apps) -> None:
    a, b, passed_on = apps
    before = len(passed_on)
    # a media type FastAPI reads as JSON too, but not plain application/json: the declared route answers it
    vendor = {**AUTH, "Content-Type": "application/vnd.api+json"}
    assert same_reply(a, b, "POST", "/v1/users/1/recommendations", b'{"k": 5}', vendor) == 200
    assert same_reply(a, b, "POST", "/v1/users/1/recommendations", b'{"k": 0}', AUTH) == 422
    assert len(passed_on) == before + 2
    # other methods on the path are not the direct route's: 405 with the declared route's Allow header
    assert same_reply(a, b, "GET", "/v1/users/1/recommendations", None, AUTH) == 405


def test_a_users_own_key_and_the_rate_limit_hold_on_the_direct_route(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    """One request in a key's rate limit each, valid or not, on either way; another user's key is a 403."""
    from driftrec.memory.keys import KeyStore

    data = copy_of(seeded_data, tmp_path)
    own = settings.model_copy(
        update={"data_dir": data, "chroma_path": data / "chroma", "api_rate_per_minute": 6, "api_rate_burst": 3}
    )
    ada = KeyStore.open(own).create("ada")[0]
    with TestClient(create_app(Recommender(own, llm=None))) as client:
        mine = {"Authorization": f"Bearer {ada}", **JSON}

        def ask(user: str, body: bytes) -> int:
            return client.post(f"/v1/users/{user}/recommendations", content=body, headers=mine).status_code

        assert ask("bob", b'{"k": 5}') == 403
        assert [ask("ada", b'{"k": 0}'), ask("ada", b'{"k": 5}'), ask("ada", b'{"k": 5}')] == [422, 200, 429]
