"""The database goes away and comes back: a real PostgreSQL server (its own, so the session's server stays
up) is stopped under a running service and started again.

While it is down every route that needs it answers 503 with Retry-After (never a 500), health says
"unavailable"; nothing acknowledged before is lost, and the same process serves again once it returns,
without a restart. In-process app on a real Recommender (real Chroma, real MovieLens catalog) without an LLM.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pgserver
from fastapi.testclient import TestClient

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.server import create_app
from tests.conftest import copy_of, on_backend

KEY = "outage-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def events(user: str, n: int, offset: int = 0) -> dict[str, object]:
    at = datetime(2024, 2, 1, tzinfo=UTC)
    return {
        "events": [
            {"user": user, "item": str(1 + i), "action": "click", "timestamp": (at + timedelta(minutes=i)).isoformat()}
            for i in range(offset, offset + n)
        ]
    }


def test_a_database_outage_is_a_503_and_the_service_recovers_when_it_returns(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "pg-outage"
    server = pgserver.get_server(folder, cleanup_mode="stop")  # a PostgreSQL server of this test's own
    try:
        check_outage(settings, seeded_data, tmp_path, folder, server.get_uri(), server)
    finally:
        server.cleanup()  # a no-op if the test already stopped it


def check_outage(
    settings: Settings, seeded_data: Path, tmp_path: Path, folder: Path, url: str, server: pgserver.PostgresServer
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = on_backend(settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"}), url, data)
    with TestClient(create_app(Recommender(own, llm=None), api_key=KEY)) as http:
        acknowledged = http.post("/v1/events", json=events("olga", 5), headers=AUTH)
        assert acknowledged.status_code == 200 and acknowledged.json()["new"] == 5
        assert http.post("/v1/users/olga/recommendations", json={"k": 3}, headers=AUTH).status_code == 200

        server.cleanup()  # the database server stops
        for method, path, body in [
            ("POST", "/v1/events", events("olga", 5, offset=5)),
            ("POST", "/v1/users/olga/recommendations", {"k": 3}),
            ("GET", "/v1/users/olga/profile", None),
            ("POST", "/v1/users/olga/feedback", {"item": "50", "signal": "like"}),
            ("DELETE", "/v1/users/olga", None),
        ]:
            down = http.request(method, path, json=body, headers=AUTH)
            assert down.status_code == 503, (path, down.status_code, down.text)
            assert down.headers["Retry-After"] == "5" and "unavailable" in down.json()["detail"]
            assert "pg-outage" not in down.text  # the cause (with its socket path) goes to the log only
        health = http.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "unavailable"}

        restarted = pgserver.get_server(folder, cleanup_mode="stop")  # ... and comes back
        try:
            assert http.get("/health").json() == {"status": "degraded"}  # up (no LLM in this test)
            # every worker thread's connection died with the server; each is replaced on first use
            assert {http.get("/v1/users/olga/profile", headers=AUTH).status_code for _ in range(30)} == {200}
            retried = http.post("/v1/events", json=events("olga", 5, offset=5), headers=AUTH)
            assert retried.status_code == 200 and retried.json()["new"] == 5  # the client's retry lands once
            answer = http.post("/v1/users/olga/recommendations", json={"k": 3}, headers=AUTH)
            assert answer.status_code == 200 and len(answer.json()["items"]) == 3
            clicked = {str(1 + i) for i in range(10)}
            assert not clicked & {r["item"]["id"] for r in answer.json()["items"]}  # all ten events are there
        finally:
            restarted.cleanup()
