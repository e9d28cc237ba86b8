"""Who may call what: keys scoped to one user get 403 on every other user's route (tried route by route),
admin keys reach everyone, keys are stored hashed, revoking works at once, forgetting a user takes their
keys, each key has its own rate limit (429 with Retry-After), and the OpenAPI docs can be turned off.

In-process app on a real Recommender (real Chroma, real MovieLens catalog; the SQLite store and a real
PostgreSQL) without an LLM: access control happens before any LLM is asked."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.memory.keys import KeyStore
from driftrec.server import create_app
from tests.conftest import copy_of, on_backend

ALICE, BOB = "alice", "bob"

# One valid request per route of a user; the test fails if a route is added without an entry here.
USER_ROUTES: dict[tuple[str, str], dict | None] = {
    ("POST", "/v1/users/{user}/recommendations"): {"k": 2},
    ("POST", "/v1/users/{user}/feedback"): {"item": "50", "signal": "like"},
    ("GET", "/v1/users/{user}/profile"): None,
    ("GET", "/v1/users/{user}/profile/history"): None,
    ("POST", "/v1/users/{user}/profile/edits"): {"edits": [{"name": "Comedy", "kind": "interest", "action": "add"}]},
    ("POST", "/v1/users/{user}/profile/refresh"): {},
    ("POST", "/v1/users/{user}/chat"): {"message": "something funny please"},
    ("DELETE", "/v1/users/{user}"): None,
}


@pytest.fixture(scope="module")
def own_settings(
    settings: Settings, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory, module_database_url: str | None
) -> Settings:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("http-access"))
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "api_rate_per_minute": 0})
    return on_backend(own, module_database_url, data)


@pytest.fixture(scope="module")
def keys(own_settings: Settings) -> dict[str, str]:
    store = KeyStore.open(own_settings)
    return {
        ALICE: store.create(ALICE, "alice's app")[0],
        BOB: store.create(BOB)[0],
        "admin": store.create(None, "ops")[0],
    }


@pytest.fixture(scope="module")
def http(own_settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(Recommender(own_settings, llm=None))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(http: TestClient, method: str, path: str, body: dict | None, token: str | None):
    headers = bearer(token) if token else {}
    return http.request(method, path, json=body, headers=headers)


def test_every_user_route_refuses_another_users_key_and_serves_its_own(http: TestClient, keys: dict[str, str]) -> None:
    routes = {
        (method, r.path)
        for r in http.app.routes
        if isinstance(r, APIRoute) and "{user}" in r.path
        for method in r.methods
    }
    assert routes == set(USER_ROUTES), "a user route without an access test"
    for (method, path), body in USER_ROUTES.items():
        if method == "DELETE":
            continue  # last, below: it forgets the user
        refused = call(http, method, path.format(user=ALICE), body, keys[BOB])
        assert refused.status_code == 403, (method, path, refused.text)
        assert "another user" in refused.json()["detail"]
        served = call(http, method, path.format(user=ALICE), body, keys[ALICE])
        assert served.status_code == 200, (method, path, served.text)
        by_admin = call(http, method, path.format(user=BOB), body, keys["admin"])
        assert by_admin.status_code == 200, (method, path, by_admin.text)
    assert call(http, "DELETE", f"/v1/users/{BOB}", None, keys[ALICE]).status_code == 403


def test_a_users_key_sends_only_that_users_events(http: TestClient, keys: dict[str, str]) -> None:
    mine = {"user": ALICE, "item": "1", "rating": 4, "timestamp": 1_700_000_000}
    theirs = {"user": BOB, "item": "2", "rating": 5, "timestamp": 1_700_000_100}
    refused = http.post("/v1/events", json={"events": [mine, theirs]}, headers=bearer(keys[ALICE]))
    assert refused.status_code == 403 and "events[1].user" in refused.json()["detail"]
    assert http.post("/v1/events", json={"events": [mine]}, headers=bearer(keys[ALICE])).status_code == 200
    both = http.post("/v1/events", json={"events": [mine, theirs]}, headers=bearer(keys["admin"]))
    assert both.status_code == 200


def test_catalog_routes_take_any_valid_key_and_no_key_is_a_401(http: TestClient, keys: dict[str, str]) -> None:
    assert http.get("/v1/genres", headers=bearer(keys[ALICE])).status_code == 200
    assert http.get("/v1/items/50", headers=bearer(keys[BOB])).json()["title"].startswith("Star Wars")
    for headers in ({}, bearer("drk_000000000000_" + "x" * 43), bearer("not a key")):
        reply = http.get("/v1/genres", headers=headers)
        assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert http.get("/health").json() == {"status": "degraded"}  # open, and says nothing else


def test_keys_are_stored_hashed_and_revoked_at_once(
    http: TestClient, keys: dict[str, str], own_settings: Settings
) -> None:
    store = KeyStore.open(own_settings)
    token, key = store.create(ALICE, "to revoke")
    assert http.get(f"/v1/users/{ALICE}/profile", headers=bearer(token)).status_code == 200
    stored = repr(store.db.connection().execute("SELECT * FROM api_keys").fetchall())
    assert token not in stored and keys[ALICE] not in stored and key.id in stored  # only the id and a hash
    raw = b"".join(p.read_bytes() for p in own_settings.data_dir.glob("memory.db*"))  # the SQLite file, if any
    assert token.encode() not in raw and keys[ALICE].encode() not in raw
    store.revoke(key.id)
    assert http.get(f"/v1/users/{ALICE}/profile", headers=bearer(token)).status_code == 401
    assert store.get(key.id).revoked_at is not None


def test_a_first_key_closes_a_running_open_service_within_key_poll_s(
    settings: Settings, seeded_data: Path, tmp_path: Path, database_url: str | None
) -> None:
    """An open service does not ask the store "does any key exist?" on every request: it trusts its last
    answer for ``api.key_poll_s``. A key made elsewhere (as `driftrec keys create` does) closes it within
    that time; with 0 it is asked on each request and closes at once."""
    data = copy_of(seeded_data, tmp_path / "open")
    base = on_backend(
        settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "api_rate_per_minute": 0}),
        database_url,
        data,
    )
    store = KeyStore.open(base)
    for poll_s in (0.5, 0.0):
        own = base.model_copy(update={"api_key_poll_s": poll_s})
        with TestClient(create_app(Recommender(own, llm=None))) as client:
            assert client.get("/v1/genres").status_code == 200  # open: no key exists
            token, key = store.create(None, "first")
            if poll_s:
                time.sleep(poll_s + 0.1)
            assert client.get("/v1/genres").status_code == 401
            assert client.get("/v1/genres", headers=bearer(token)).status_code == 200
            store.revoke(key.id)  # open again for the next round


def test_forgetting_a_user_takes_their_keys(http: TestClient, own_settings: Settings) -> None:
    store = KeyStore.open(own_settings)
    token, key = store.create("carol")
    reply = http.delete("/v1/users/carol", headers=bearer(token))
    assert reply.status_code == 200 and reply.json()["rows"]["api_keys"] == 1
    assert http.get("/v1/users/carol/profile", headers=bearer(token)).status_code == 401
    assert all(k.id != key.id for k in store.all())


def test_each_key_has_its_own_rate_limit(settings: Settings, seeded_data: Path, tmp_path: Path) -> None:
    data = copy_of(seeded_data, tmp_path)
    own = settings.model_copy(
        update={"data_dir": data, "chroma_path": data / "chroma", "api_rate_per_minute": 6, "api_rate_burst": 3}
    )
    store = KeyStore.open(own)
    first, second = store.create("u1")[0], store.create("u2")[0]
    with TestClient(create_app(Recommender(own, llm=None))) as client:
        codes = [client.get("/v1/users/u1/profile", headers=bearer(first)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/v1/users/u1/profile", headers=bearer(first))
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 10
        assert "6 requests a minute" in limited.json()["detail"]
        assert client.get("/v1/users/u2/profile", headers=bearer(second)).status_code == 200  # another key
        assert client.get("/health").status_code == 200  # never limited


def test_openapi_docs_can_be_turned_off(own_settings: Settings) -> None:
    quiet = own_settings.model_copy(update={"api_docs": False})
    with TestClient(create_app(Recommender(quiet, llm=None))) as client:
        assert [client.get(p).status_code for p in ("/openapi.json", "/docs", "/redoc")] == [404, 404, 404]
        assert client.get("/health").status_code == 200
    with TestClient(create_app(Recommender(own_settings, llm=None))) as client:
        assert client.get("/openapi.json").status_code == 200


def test_the_service_collects_young_garbage_less_often_while_it_serves(
    own_settings: Settings, keys: dict[str, str]
) -> None:
    """Requests in flight would otherwise be scanned and promoted by a young collection every 700
    allocations (docs/benchmarks.md: CPU per recommendation doubled at 10 concurrent requests); Python's
    setting comes back when the service stops, and 0 leaves it alone."""
    before = gc.get_threshold()
    with TestClient(create_app(Recommender(own_settings, llm=None))) as client:
        answer = client.post("/v1/users/1/recommendations", json={"k": 2}, headers=bearer(keys["admin"]))
        assert answer.status_code == 200 and len(answer.json()["items"]) == 2
        assert gc.get_threshold()[0] == own_settings.api.gc_threshold == 20_000
    assert gc.get_threshold() == before
    untouched = own_settings.model_copy(update={"api_gc_threshold": 0})
    with TestClient(create_app(Recommender(untouched, llm=None))):
        assert gc.get_threshold() == before
