"""Chroma in http mode takes a tenant and a database (several deployments on one server, kept apart), and
the client carries the configured headers. Against the real `chroma run` server."""

from __future__ import annotations

import contextlib
import http.server
import threading

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings
from pydantic import SecretStr

from driftrec.config import Settings
from driftrec.models import Item
from driftrec.retrieval.store import chroma_client, open_item_index

pytestmark = pytest.mark.chroma_server


async def test_a_tenant_and_database_of_its_own_keep_deployments_apart(
    settings: Settings, chroma_server: tuple[str, int]
) -> None:
    host, port = chroma_server
    admin = chromadb.AdminClient(
        ChromaSettings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host=host, chroma_server_http_port=port
        )
    )
    admin.create_tenant("acme")
    admin.create_database("staging", tenant="acme")
    http = {"chroma_mode": "http", "chroma_host": host, "chroma_port": port, "chroma_prefix": "tenancy-"}
    acme = settings.model_copy(update={**http, "chroma_tenant": "acme", "chroma_database": "staging"})
    default = settings.model_copy(update=http)

    index = await open_item_index(acme)
    await index.upsert([Item(id="t1", title="Tenancy Test (2001)", genres=("Drama",), year=2001)])
    assert await index.count() == 1
    other = await open_item_index(default)  # the same name in the default tenant: another collection
    assert other.collection.id != index.collection.id and await other.count() == 0


def test_the_client_sends_the_configured_headers_and_token(settings: Settings) -> None:
    """What goes over the wire, recorded by a listener on loopback (a proxy in front of Chroma would see the
    same): every request carries the extra headers and the bearer token."""
    seen: list[dict[str, str]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        own = settings.model_copy(
            update={
                "chroma_mode": "http",
                "chroma_host": "127.0.0.1",
                "chroma_port": server.server_address[1],
                "chroma_headers": {"X-Team": "recs"},
                "chroma_auth_token": SecretStr("t0ken"),
            }
        )
        with contextlib.suppress(Exception):  # the listener is not Chroma: the client gives up after asking
            chroma_client(own)
    finally:
        server.shutdown()
    assert seen, "the client sent nothing"
    assert all(h.get("X-Team") == "recs" and h.get("Authorization") == "Bearer t0ken" for h in seen)
