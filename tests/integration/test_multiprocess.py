"""Several API processes, one truth: two `driftrec serve` processes (each with its own data dir, as on two
hosts) share one real PostgreSQL and one real `chroma run` server, and answer with the session's vLLM.

Writers through both lose no event and double none; concurrent profile updates through both write each
version once, with no gap; a process SIGKILLed in the middle of an update leaves the other serving and the
profile as it was."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from driftrec.agent.recommender import load_items
from driftrec.config import Settings
from driftrec.llm import LLM
from driftrec.memory.db import open_database_url
from driftrec.retrieval.store import open_item_index
from tests.conftest import copy_of, endpoint_env, fresh_database, on_backend, served

pytestmark = [pytest.mark.vllm, pytest.mark.chroma_server]
KEY = "multi-process-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PREFIX = "mp-"  # this module's collections on the shared Chroma server


@pytest.fixture(scope="module")
def shared(
    settings: Settings,
    llm: LLM,
    seeded_data: Path,
    postgres: str,
    chroma_server: tuple[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, object]:
    """One fresh PostgreSQL database with the seeded events, the catalog in the Chroma server, and the
    environment of a serving process on them (without its data dir)."""
    host, port = chroma_server
    url = fresh_database(postgres)
    data = copy_of(seeded_data, tmp_path_factory.mktemp("mp-seed"))
    on_backend(settings, url, seeded=data)  # the seeded events into PostgreSQL

    async def catalog_to_server() -> None:
        embedded = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
        source = await open_item_index(embedded)
        got = source.collection.get(include=["embeddings"])
        vectors = dict(zip(got["ids"], got["embeddings"], strict=True))
        remote = settings.model_copy(
            update={
                "data_dir": data,
                "chroma_mode": "http",
                "chroma_host": host,
                "chroma_port": port,
                "chroma_prefix": PREFIX,
                "database_url": SecretStr(url),
            }
        )
        items = load_items(remote)
        await (await open_item_index(remote)).upsert(items.values(), vectors=vectors)

    asyncio.run(catalog_to_server())
    env = endpoint_env(
        settings,
        llm,
        data,
        DRIFTREC_DATABASE_URL=url,
        DRIFTREC_CHROMA_MODE="http",
        DRIFTREC_CHROMA_HOST=host,
        DRIFTREC_CHROMA_PORT=str(port),
        DRIFTREC_CHROMA_PREFIX=PREFIX,
        DRIFTREC_API_KEY=KEY,
        DRIFTREC_API_RATE_PER_MINUTE="0",  # one key drives all the load here
    )
    return {"url": url, "seed": data, "env": env}


@contextlib.contextmanager
def process(shared: dict[str, object], where: Path, **extra: str) -> Iterator[str]:
    """One `driftrec serve` with a data dir of its own (the catalog file), on the shared stores."""
    data = copy_of(shared["seed"], where)  # type: ignore[arg-type]
    env = {**shared["env"], "DRIFTREC_DATA_DIR": str(data), **extra}  # type: ignore[dict-item]
    with served(data, env) as base:
        yield base


@pytest.fixture(scope="module")
def pair(shared: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with (
        process(shared, tmp_path_factory.mktemp("mp-a")) as a,
        process(shared, tmp_path_factory.mktemp("mp-b")) as b,
    ):
        yield a, b


def count(url: str, sql: str, *params: object) -> int:
    return int(open_database_url(url, Path()).connection().execute(sql, params).fetchone()[0])


def event(user: str, item: str, at: datetime, event_id: str) -> dict[str, object]:
    return {
        "user": user,
        "item": item,
        "action": "rate",
        "rating": 4,
        "timestamp": at.isoformat(),
        "event_id": event_id,
    }


def test_writers_through_both_processes_lose_nothing_and_double_nothing(
    shared: dict[str, object], pair: tuple[str, str]
) -> None:
    """Eight writers post 25 batches each, alternating processes, and retry every batch through the other
    process (a client failing over): each of the 800 distinct events is stored exactly once."""
    base = datetime(2024, 5, 1, tzinfo=UTC)
    new: list[int] = []
    errors: list[str] = []

    def writer(w: int) -> None:
        with httpx.Client(headers=AUTH, timeout=120) as http:
            for b in range(25):
                batch = [
                    event(
                        f"mp{w}",
                        str(1 + (w * 100 + b * 4 + i) % 1682),
                        base + timedelta(minutes=b * 4 + i),
                        f"{w}-{b}-{i}",
                    )
                    for i in range(4)
                ]
                first, second = pair[(w + b) % 2], pair[(w + b + 1) % 2]
                for target in (first, second):
                    answer = http.post(f"{target}/v1/events", json={"events": batch})
                    if answer.status_code != 200:
                        errors.append(answer.text)
                    else:
                        new.append(answer.json()["new"])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(new) == 800  # the retries through the other process counted zero
    url = str(shared["url"])
    assert count(url, "SELECT COUNT(*) FROM events WHERE user LIKE 'mp%'") == 800
    assert count(url, "SELECT COUNT(DISTINCT event_id) FROM events WHERE user LIKE 'mp%'") == 800


def sessions_for(user: str, n: int, start: datetime) -> list[dict[str, object]]:
    """``n`` closed sessions of three ratings each, a day apart."""
    items = [["50", "172", "181"], ["1", "71", "94"], ["82", "96", "121"]]
    return [
        event(user, item, start + timedelta(days=s, minutes=m), f"{user}-{s}-{m}")
        for s in range(n)
        for m, item in enumerate(items[s % len(items)])
    ]


def refresh(base: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/users/mp-profile/profile/refresh", headers=AUTH, timeout=600)


def versions(base: str, user: str) -> list[int]:
    answer = httpx.get(f"{base}/v1/users/{user}/profile/history", headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    return [p["version"] for p in answer.json()]


def test_concurrent_updates_through_both_processes_write_each_version_once(pair: tuple[str, str]) -> None:
    a, b = pair
    start = datetime(2024, 6, 1, tzinfo=UTC)
    assert httpx.post(f"{a}/v1/events", json={"events": sessions_for("mp-profile", 2, start)}, headers=AUTH).is_success
    results: dict[str, httpx.Response] = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, refresh(s))) for s in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results.values()] == [200, 200], [r.text for r in results.values()]
    updated = [r.json()["updated"] for r in results.values()]
    assert updated.count(True) == 1  # one process made the version; the other found it made (or lost the race)
    assert versions(a, "mp-profile") == versions(b, "mp-profile") == [1]
    # a later session, refreshed through the other process, is the next version: no gap, no duplicate
    later = sessions_for("mp-profile", 3, start)[6:]
    assert httpx.post(f"{b}/v1/events", json={"events": later}, headers=AUTH).is_success
    assert refresh(b).json()["updated"] is True
    assert versions(a, "mp-profile") == [1, 2]


def test_a_process_killed_mid_update_leaves_the_other_serving_and_the_profile_intact(
    shared: dict[str, object], pair: tuple[str, str], tmp_path: Path
) -> None:
    a, _ = pair
    user = "mp-killed"
    start = datetime(2024, 7, 1, tzinfo=UTC)
    assert httpx.post(f"{a}/v1/events", json={"events": sessions_for(user, 1, start)}, headers=AUTH).is_success
    assert httpx.post(f"{a}/v1/users/{user}/profile/refresh", headers=AUTH, timeout=600).json()["updated"] is True
    before = httpx.get(f"{a}/v1/users/{user}/profile", headers=AUTH).json()
    assert before["version"] == 1
    second = sessions_for(user, 2, start)[3:]
    assert httpx.post(f"{a}/v1/events", json={"events": second}, headers=AUTH).is_success

    # a third process dies by SIGKILL inside the transaction that would move the head
    with process(shared, tmp_path / "doomed", DRIFTREC_FAILPOINT="profile.before_head_move") as doomed:
        with pytest.raises(httpx.HTTPError):  # the connection drops: the process died mid-request
            httpx.post(f"{doomed}/v1/users/{user}/profile/refresh", headers=AUTH, timeout=600)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{doomed}/health")  # and is gone

    # the survivor serves, and the profile is the one before the update
    assert httpx.get(f"{a}/v1/users/{user}/profile", headers=AUTH).json() == before
    assert versions(a, user) == [1]
    answer = httpx.post(f"{a}/v1/users/{user}/recommendations", json={"k": 5}, headers=AUTH, timeout=600)
    assert answer.status_code == 200 and len(answer.json()["items"]) == 5
    # and the update the dead process could not finish goes through the survivor as the next version
    assert httpx.post(f"{a}/v1/users/{user}/profile/refresh", headers=AUTH, timeout=600).json()["updated"] is True
    assert versions(a, user) == [1, 2]
