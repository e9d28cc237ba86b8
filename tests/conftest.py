"""Shared fixtures: real settings in a temporary data dir, the prepared model, one embedded vLLM.

The model cache is the user's normal cache (converting the checkpoint takes ~40 s; doing it once per
machine is the point of the cache). Everything stateful goes to a per-session temporary folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from driftrec.config import Settings, load_settings
from driftrec.llm import LLM, open_llm
from driftrec.llm.checkpoint import PreparedModel, prepare_model

# The suite's embedded model is SmolLM2-135M (the fastest on 2 cores), for the fixtures and for every
# subprocess a test starts; the Qwen tests (markers qwen, qwen15) choose theirs explicitly. The product's
# default (DRIFTREC_MODEL unset) is tested by the config unit tests and `driftrec llm models`.
os.environ.setdefault("DRIFTREC_MODEL", "smollm2-135m")


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("driftrec-data")
    log = data / "llm-log.jsonl"
    # Background upkeep off: tests that observe events must not start LLM work behind each other's backs;
    # the upkeep tests turn it on for their own Recommender.
    return load_settings(
        data_dir=data, llm_log_path=log if os.environ.get("DRIFTREC_TEST_LOG") else None, memory_upkeep=False
    )


@pytest.fixture(scope="session")
def prepared(settings: Settings) -> PreparedModel:
    return prepare_model(settings)


@pytest.fixture(scope="session")
async def llm(settings: Settings) -> AsyncIterator[LLM]:
    """The real embedded vLLM, started once for the whole test session."""
    connected = await open_llm(settings)
    try:
        yield connected
    finally:
        await connected.aclose()


@pytest.fixture()
def no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run in an empty folder with no DRIFTREC_* variables, so only what the test sets counts."""
    for key in list(os.environ):
        if key.startswith("DRIFTREC_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real `chroma run` server on 127.0.0.1 for the session, stopped at the end."""
    from driftrec.llm.runtime import free_port
    from driftrec.retrieval.chroma_server import chroma_server as run_chroma

    port = free_port()
    with run_chroma(tmp_path_factory.mktemp("chroma-server"), port):
        yield "127.0.0.1", port


@pytest.fixture(scope="session", params=["embedded", "http"])
def chroma_settings(
    request: pytest.FixtureRequest, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The same settings against embedded Chroma and against the `chroma run` server."""
    if request.param == "embedded":
        return settings.model_copy(
            update={"chroma_mode": "embedded", "chroma_path": tmp_path_factory.mktemp("chroma-embedded")}
        )
    host, port = request.getfixturevalue("chroma_server")
    return settings.model_copy(update={"chroma_mode": "http", "chroma_host": host, "chroma_port": port})


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server for the session (the self-contained `pgserver` wheel; no root needed, and as
    root it runs the server as its own user). Yields the admin URL; tests get databases of their own."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def fresh_database(admin_url: str) -> str:
    """A new, empty database on the session's server; returns its URL."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Each test that takes this runs twice: on the embedded SQLite default (None) and on a fresh PostgreSQL
    database of its own."""
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres"))


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(request: pytest.FixtureRequest) -> str | None:
    """``database_url`` for module-scoped fixtures (a server shared by a module's tests)."""
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres"))


def on_backend(settings: Settings, url: str | None, seeded: Path | None = None) -> Settings:
    """``settings`` with the memory store at ``url``; a seeded data dir's events are copied into it."""
    if url is None:
        return settings
    if seeded is not None:
        from driftrec.memory.db import SqliteDatabase, open_database_url
        from driftrec.memory.events import EventStore

        events = EventStore(SqliteDatabase(seeded / "memory.db")).all_blocking()
        EventStore(open_database_url(url, seeded)).append_blocking(events)
    return settings.model_copy(update={"database_url": SecretStr(url)})


SEED_USERS = [str(u) for u in range(1, 101)]


@pytest.fixture(scope="session")
def seeded_data(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with MovieLens-100K as the served catalog (embedded once) and the first 100 users'
    ratings as events. Tests copy it, so each gets its own state without re-embedding."""
    import asyncio

    from driftrec.agent.recommender import save_catalog
    from driftrec.data import load_movielens_100k
    from driftrec.memory.db import SqliteDatabase
    from driftrec.memory.events import EventStore
    from driftrec.retrieval.store import open_item_index

    data = tmp_path_factory.mktemp("seeded")
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
    dataset = load_movielens_100k(settings.cache_dir)

    async def seed() -> None:
        index = await open_item_index(own)
        await index.upsert(dataset.items.values())
        await EventStore(SqliteDatabase(data / "memory.db")).append(
            e for e in dataset.interactions if e.user in SEED_USERS
        )

    asyncio.run(seed())
    save_catalog(own, dataset.items.values())
    return data


def copy_of(seeded: Path, where: Path) -> Path:
    import shutil

    shutil.copytree(seeded, where, dirs_exist_ok=True)
    return where


def endpoint_env(settings: Settings, llm: LLM, data: Path, **extra: str) -> dict[str, str]:
    """Environment for a driftrec subprocess on ``data`` that uses the session's vLLM as its endpoint."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DRIFTREC_")} | {
        "DRIFTREC_DATA_DIR": str(data),
        "DRIFTREC_CACHE_DIR": str(settings.cache_dir),
        "DRIFTREC_LLM_BASE_URL": llm.client.base_url,
        "DRIFTREC_LLM_MODEL": llm.client.model,
        "DRIFTREC_CHAT_MODE": "plan",
        "DRIFTREC_RANKING_TIMEOUT_S": "600",  # queueing on a shared 2-core CI box is not what is tested
        "DRIFTREC_MEMORY_UPKEEP": "false",  # no background LLM work unless a test asks for it
        **extra,
    }


@contextlib.contextmanager
def served(data: Path, env: dict[str, str], *, timeout_s: float = 180.0, workers: int = 1) -> Iterator[str]:
    """``driftrec serve [--workers N]`` on a free port of 127.0.0.1; yields its base URL."""
    import subprocess
    import sys
    import time

    import httpx

    from driftrec.llm.runtime import free_port

    port = free_port()
    log = open(data / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "driftrec.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(data / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not up in {timeout_s:.0f} s")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(30)
        log.close()
