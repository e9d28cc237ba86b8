"""Chroma goes away and comes back: a `chroma run` server of this test's own is stopped under a running
service and started again on the same port and folder.

While it is down recommendations still answer — from co-occurrence and popularity, marked degraded with the
reason, never an item the user consumed — and so does the profile (it lives in the database); what must write
vectors (a profile edit, forgetting) answers 503 with Retry-After and changes nothing; health says "degraded"
(not "unavailable": the process still serves); events are still acknowledged.
Once it returns the same process answers with the vector source again, without a restart. In-process app on
a real Recommender (real MovieLens catalog and events) without an LLM.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftrec.agent import Recommender
from driftrec.agent.recommender import load_items
from driftrec.config import Settings
from driftrec.retrieval.chroma_server import chroma_server
from driftrec.retrieval.store import open_item_index
from driftrec.server import create_app
from tests.conftest import copy_of

pytestmark = pytest.mark.chroma_server

KEY = "chroma-outage-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sources(answer: dict) -> set[str]:
    return {p["source"] for item in answer["items"] for p in item["provenance"]}


def test_chroma_down_degrades_recommendations_and_the_service_recovers_when_it_returns(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    port, folder = free_port(), tmp_path / "chroma-server"
    remote = settings.model_copy(
        update={
            "data_dir": data,
            "chroma_mode": "http",
            "chroma_host": "127.0.0.1",
            "chroma_port": port,
            "retrieval_fusion": "rrf",  # every source has a voice (the default weights may mute vector search)
        }
    )

    async def catalog_to_server() -> None:  # the seeded vectors, not embedded again
        source = await open_item_index(settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"}))
        got = source.collection.get(include=["embeddings"])
        vectors = dict(zip(got["ids"], got["embeddings"], strict=True))
        await (await open_item_index(remote)).upsert(load_items(remote).values(), vectors=vectors)

    now = datetime(1998, 5, 1, tzinfo=UTC)
    clicks = {
        "events": [
            {"user": "vera", "item": item, "action": "click", "timestamp": (now + timedelta(minutes=n)).isoformat()}
            for n, item in enumerate(["50", "172", "181"])  # the Star Wars trilogy
        ]
    }
    server = chroma_server(folder, port)
    server.__enter__()
    try:
        asyncio.run(catalog_to_server())
        rec = Recommender(remote, llm=None)
        with TestClient(create_app(rec, api_key=KEY)) as http:
            assert http.post("/v1/events", json=clicks, headers=AUTH).status_code == 200
            http.portal.call(rec.refit)  # the clicks are in the candidate indexes: nothing moves after this
            up = http.post("/v1/users/vera/recommendations", json={"k": 10}, headers=AUTH).json()
            assert not up["degraded"] and "vector" in sources(up)

            server.__exit__(None, None, None)  # Chroma stops
            server = None
            # the same request again: the answer computed a moment ago with every source up is reused
            repeat = http.post("/v1/users/vera/recommendations", json={"k": 10}, headers=AUTH).json()
            assert repeat["cached"] and not repeat["degraded"] and repeat["items"] == up["items"]
            http.post("/v1/users/vera/recommendations", json={"k": 10, "exclude": ["1"]}, headers=AUTH)
            # ... a request not answered before is computed, without the vector source
            down = http.post("/v1/users/vera/recommendations", json={"k": 10}, headers=AUTH)
            assert down.status_code == 200, down.text
            body = down.json()
            assert body["degraded"] and "Chroma" in body["error"] and "vector" in body["error"]
            ids = [r["item"]["id"] for r in body["items"]]
            assert len(ids) == 10 == len(set(ids)) and not {"50", "172", "181"} & set(ids)
            assert "vector" not in sources(body) and sources(body) <= {"cooc", "transition", "popularity"}
            assert http.get("/v1/users/vera/profile", headers=AUTH).status_code == 200
            edit = {"edits": [{"name": "Sci-Fi", "kind": "interest", "action": "add"}]}
            for method, path, payload in [
                ("POST", "/v1/users/vera/profile/edits", edit),
                ("DELETE", "/v1/users/vera", None),
            ]:
                refused = http.request(method, path, json=payload, headers=AUTH)
                assert refused.status_code == 503, (path, refused.status_code, refused.text)
                assert refused.headers["Retry-After"] == "5" and "vector store" in refused.json()["detail"]
                assert str(port) not in refused.text  # where Chroma lives goes to the log only
            assert http.get("/v1/users/vera/profile", headers=AUTH).json()["version"] == 0  # no edit half-made
            assert http.get("/health").json() == {"status": "degraded"}
            more = {**clicks, "events": [{**e, "item": "1"} for e in clicks["events"][:1]]}
            more["events"][0]["event_id"] = "vera-late"
            assert http.post("/v1/events", json=more, headers=AUTH).json()["new"] == 1  # still acknowledged

            server = chroma_server(folder, port)  # ... and comes back, same folder and port
            server.__enter__()
            back = http.post("/v1/users/vera/recommendations", json={"k": 10}, headers=AUTH).json()
            assert not back["degraded"] and "vector" in sources(back)
            assert "1" not in {r["item"]["id"] for r in back["items"]}  # the event sent while it was down counts
            assert http.request("DELETE", "/v1/users/vera", headers=AUTH).json()["rows"]["events"] == 4
    finally:
        if server is not None:
            server.__exit__(None, None, None)
