"""The bad-input corpus of issue 15, each one a curl against `driftrec serve` that used to answer 500
(or accept what it should not): now a 4xx naming the field, with at most a short excerpt echoed.

In-process app on a real Recommender (real Chroma, real MovieLens catalog; the SQLite store and a real
PostgreSQL) without an LLM: input handling happens before any LLM is asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.server import create_app
from tests.conftest import copy_of, on_backend

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def http(
    settings: Settings, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory, module_database_url: str | None
) -> Iterator[TestClient]:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("http-input"))
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
    own = on_backend(own, module_database_url, data)
    with TestClient(create_app(Recommender(own, llm=None), api_key=KEY, max_body_bytes=1 << 20)) as client:
        yield client


def post(http: TestClient, path: str, raw: str | bytes, headers: dict[str, str] = AUTH):
    return http.post(path, content=raw.encode() if isinstance(raw, str) else raw, headers=headers)


@pytest.mark.parametrize(
    ("path", "raw", "named"),
    [
        ("/v1/users/1/feedback", '{"item": "50", "rating": NaN}', "NaN"),
        ("/v1/users/1/recommendations", '{"k": 1e400}', "out of range"),
        ("/v1/events", '{"events": [{"user": "u", "item": "1", "rating": NaN, "timestamp": 0}]}', "NaN"),
        ("/v1/users/1/recommendations", '{"k": Infinity}', "Infinity"),
        ("/v1/users/1/recommendations", '{"k": 5, "query": "\\ud800"}', "lone surrogate"),
        ("/v1/events", '{"events": [{"user": "\\ud800", "item": "1", "timestamp": 0}]}', "lone surrogate"),
        ("/v1/users/1/recommendations", '{"k": true}', "k"),
        ("/v1/users/1/recommendations", '{"k": 5', "not valid JSON"),
    ],
)
def test_bad_json_gets_a_422_naming_the_problem(http: TestClient, path: str, raw: str, named: str) -> None:
    reply = post(http, path, raw)
    assert reply.status_code == 422, reply.text
    assert named in reply.text


def test_a_non_ascii_bearer_key_is_a_401_not_a_crash(http: TestClient) -> None:
    reply = http.post("/v1/users/1/recommendations", json={}, headers={"Authorization": "Bearer clé".encode()})
    assert reply.status_code == 401


def test_oversized_bodies_and_fields_are_refused(http: TestClient) -> None:
    huge_id = '{"events": [{"user": "u", "item": "1", "timestamp": 0, "session_id": "' + "s" * 2_000_000 + '"}]}'
    assert post(http, "/v1/events", huge_id).status_code == 413
    batch = '{"events": [' + ",".join(['{"user": "u", "item": "1", "timestamp": 0}'] * 30_000) + "]}"
    assert post(http, "/v1/events", batch).status_code == 413  # over the body limit before it is parsed
    long_id = post(
        http,
        "/v1/events",
        '{"events": [{"user": "u", "item": "1", "timestamp": 0, "session_id": "' + "s" * 500 + '"}]}',
    )
    assert long_id.status_code == 422 and "session_id" in long_id.text
    assert len(long_id.content) < 2_000  # a short excerpt, not the input echoed back


def test_a_far_future_timestamp_is_refused_naming_the_event(http: TestClient) -> None:
    reply = post(http, "/v1/events", '{"events": [{"user": "u", "item": "1", "timestamp": "5138-01-01T00:00:00Z"}]}')
    assert reply.status_code == 422 and "events[0].timestamp" in reply.text


def test_health_says_only_whether_the_service_is_fully_up(http: TestClient) -> None:
    assert http.get("/health").json() == {"status": "degraded"}  # no LLM here


def test_valid_requests_still_work(http: TestClient) -> None:
    ok = post(http, "/v1/events", '{"events": [{"user": "u", "item": "1", "action": "like", "timestamp": 0}]}')
    assert ok.status_code == 200 and ok.json()["received"] == 1
    answer = post(http, "/v1/users/u/recommendations", '{"k": 3, "query": "comedies from the 90s, no horror"}')
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert len(items) == 3 and all(1990 <= i["item"]["year"] <= 1999 and "Comedy" in i["item"]["genres"] for i in items)
