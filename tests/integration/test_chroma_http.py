"""Chroma in http mode takes a tenant and a database (several deployments on one server, kept apart), the
client carries the configured headers, and it speaks TLS to a server whose certificate a private CA signed.
Against the real `chroma run` server (behind a TLS-terminating proxy for the TLS test)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import chromadb
import pytest
import trustme
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
            chroma_client(own.chroma)
    finally:
        server.shutdown()
    assert seen, "the client sent nothing"
    assert all(h.get("X-Team") == "recs" and h.get("Authorization") == "Bearer t0ken" for h in seen)


@contextlib.contextmanager
def tls_proxy(target: tuple[str, int], ca: trustme.CA) -> Iterator[int]:
    """A TLS-terminating proxy on 127.0.0.1 in front of ``target`` (as a load balancer in front of Chroma would
    be), with a certificate ``ca`` signed; yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        with contextlib.suppress(asyncio.CancelledError):  # the proxy shutting down
            await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    thread = threading.Thread(target=loop.run_forever, daemon=True)  # its own loop: the test's stays free
    thread.start()
    server = asyncio.run_coroutine_threadsafe(asyncio.start_server(handle, "127.0.0.1", 0, ssl=context), loop).result()
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:

        async def shutdown() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def test_tls_to_chroma_signed_by_a_private_ca(
    settings: Settings, chroma_server: tuple[str, int], tmp_path: Path
) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with tls_proxy(chroma_server, ca) as port:
        secure = settings.model_copy(
            update={
                "chroma_mode": "http",
                "chroma_host": "127.0.0.1",
                "chroma_port": port,
                "chroma_ssl": True,
                "chroma_ssl_ca": bundle,
                "chroma_prefix": "tls-",
            }
        )
        index = await open_item_index(secure)
        await index.upsert([Item(id="tls1", title="Transport Layer (1999)", genres=("Sci-Fi",), year=1999)])
        assert await index.count() == 1
        assert [i for i, _ in await index.search_text("transport", 1)] == ["tls1"]
        # the same server is refused without the CA: the certificate is checked, not merely accepted
        with pytest.raises(Exception, match="Could not connect") as refused:
            await open_item_index(secure.model_copy(update={"chroma_ssl_ca": None}))
        causes, cause = [], refused.value
        while cause is not None:
            causes.append(str(cause))
            cause = cause.__cause__ or cause.__context__
        assert any("CERTIFICATE_VERIFY_FAILED" in text for text in causes), causes
