"""The HTTP service over real HTTP: `driftrec serve` in its own process on 127.0.0.1, on a copy of the
seeded MovieLens data, talking to the session's real vLLM; then fuzzed from its own OpenAPI schema."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi.encoders import jsonable_encoder
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from driftrec.config import Settings
from driftrec.llm import LLM
from driftrec.models import RecommendationList
from tests.conftest import copy_of, endpoint_env, served

pytestmark = pytest.mark.vllm
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(settings: Settings, llm: LLM, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("http"))
    env = endpoint_env(settings, llm, data, DRIFTREC_RANKING_LLM_WEIGHT="0.3", DRIFTREC_API_KEY=KEY)
    with served(data, env) as base:
        yield base


def test_health_and_openapi(server: str) -> None:
    health = httpx.get(f"{server}/health").json()
    assert health == {"status": "ok"}  # nothing else for anonymous callers: no URL, no model, no counts
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/v1/events", "/v1/users/{user}/recommendations", "/v1/users/{user}/chat"} <= set(paths)


def test_the_api_key_is_required(server: str) -> None:
    assert httpx.post(f"{server}/v1/users/1/recommendations", json={}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{server}/v1/users/1/recommendations", json={}, headers=wrong).status_code == 401


def test_recommend_feedback_profile_forget(server: str) -> None:
    with httpx.Client(base_url=server, headers=AUTH, timeout=120) as http:
        answer = http.post("/v1/users/1/recommendations", json={"k": 5, "filters": {"exclude_genres": ["Drama"]}})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert jsonable_encoder(RecommendationList.model_validate(body)) == body  # what FastAPI itself would send
        assert len(body["items"]) == 5 and body["ranking"] == "verbalizer" and not body["degraded"]
        assert all("Drama" not in r["item"]["genres"] for r in body["items"])
        top = body["items"][0]["item"]["id"]

        event = http.post("/v1/users/1/feedback", json={"item": top, "signal": "dislike"})
        assert event.status_code == 200 and event.json()["action"] == "dislike"
        again = http.post("/v1/users/1/recommendations", json={"k": 5}).json()
        assert top not in [r["item"]["id"] for r in again["items"]] and not again["cached"]
        # once the index update the dislike started is done, nothing changes: the same answer is reused
        answers = [again] + [http.post("/v1/users/1/recommendations", json={"k": 5}).json() for _ in range(3)]
        reused = [n for n, a in enumerate(answers) if a["cached"]]
        assert reused and answers[reused[0]]["items"] == answers[reused[0] - 1]["items"]

        assert http.get("/v1/users/1/profile").json()["version"] == 0
        assert http.get("/v1/users/1/profile/history").json() == []
        forgot = http.delete("/v1/users/1")
        assert forgot.status_code == 200, forgot.text
        assert forgot.json()["rows"]["events"] > 0  # the user's ratings, and the dislike just given
        assert http.delete("/v1/users/1").json()["rows"]["events"] == 0  # forgetting twice is harmless


def test_bad_requests_get_4xx_naming_the_problem(server: str) -> None:
    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as http:
        bad = http.post("/v1/events", json={"events": [{"user": "u", "item": "1", "timestamp": "yesterday"}]})
        assert bad.status_code == 422 and "timestamp" in bad.text
        rating = http.post("/v1/events", json={"events": [{"user": "u", "item": "1", "rating": 11, "timestamp": 0}]})
        assert rating.status_code == 422 and "rating" in rating.text
        unknown = http.post("/v1/events", json={"events": [{"user": "u", "item": "nope", "timestamp": 0}]})
        assert unknown.status_code == 404 and "nope" in unknown.text
        both = http.post("/v1/users/u/feedback", json={"item": "1", "signal": "like", "rating": 4})
        assert both.status_code == 422
        assert http.post("/v1/users/u/recommendations", json={"k": 0}).status_code == 422
        ok = http.post("/v1/events", json={"events": [{"user": "u", "item": "1", "action": "like", "timestamp": 0}]})
        assert ok.json() == {"received": 1, "new": 1}


def test_chat_streams_server_sent_events(server: str) -> None:
    deltas, done = [], False
    with httpx.stream(
        "POST", f"{server}/v1/users/5/chat", json={"message": "recommend me a comedy"}, headers=AUTH, timeout=180
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                done = done or event.get("done", False)
                if "delta" in event:
                    deltas.append(event["delta"])
    assert done and len(deltas) > 1 and "".join(deltas).strip()


def fuzz(operation, examples: int, seen: dict[str, list[int]], mode: GenerationMode = GenerationMode.POSITIVE):
    """A Hypothesis test of one operation: generated requests, none may get a 5xx."""

    @hypothesis_settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        response = case.call(headers=AUTH, timeout=180)
        seen.setdefault(operation.label, []).append(response.status_code)
        assert response.status_code < 500, f"{operation.label}: {response.status_code} {response.text[:300]}"

    return check


def test_no_generated_input_causes_a_server_error(server: str) -> None:
    """Schemathesis generates requests for every operation from the service's own OpenAPI schema."""
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    seen: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        llm_bound = operation.path.endswith(("/chat", "/refresh"))  # each example costs LLM seconds
        fuzz(operation, 4 if llm_bound else 15, seen)()
        with contextlib.suppress(Unsatisfiable):  # an operation with no input has no invalid input
            fuzz(operation, 5, seen, GenerationMode.NEGATIVE)()  # invalid input: refused before the LLM
    assert len(seen) >= 9, seen  # every operation was exercised
