"""The disk under the SQLite store fills up, then space comes back: a real, small filesystem (a 1 MB tmpfs
mounted by the test; root only) holds the database file, and a ballast file takes its last free byte.

While it is full, writes answer 503 with Retry-After (SQLite's "database or disk is full", never a 500) and
reads still answer; nothing acknowledged before is lost; once space is freed the client's retry of the
refused batch lands, exactly once, in the same process.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.memory.db import SqliteDatabase
from driftrec.server import create_app
from tests.conftest import copy_of

KEY = "disk-full-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root is needed): {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Write a ballast file until the filesystem refuses another byte."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as out:
        for block in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * block)
    return ballast


def batch(n: int, size: int = 40) -> dict[str, object]:
    at = datetime(1998, 5, 1, tzinfo=UTC) + timedelta(hours=n)
    return {
        "events": [
            {
                "user": f"writer{n % 5}",
                "item": str(1 + (n * size + i) % 1600),
                "action": "click",
                "timestamp": (at + timedelta(seconds=i)).isoformat(),
                "event_id": f"b{n}-{i}",
                "text": "x" * 200,  # bulk, so the disk fills in a few batches
            }
            for i in range(size)
        ]
    }


def test_a_full_disk_is_a_503_nothing_acknowledged_is_lost_and_writes_resume_when_space_returns(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    with small_filesystem(tmp_path / "tiny", "1m") as tiny:
        database = tiny / "memory.db"
        own = settings.model_copy(
            update={
                "data_dir": data,
                "chroma_path": data / "chroma",
                "database_url": SecretStr(f"sqlite:///{database}"),
            }
        )
        with TestClient(create_app(Recommender(own, llm=None), api_key=KEY)) as http:
            assert http.post("/v1/events", json=batch(0), headers=AUTH).json()["new"] == 40
            ballast = fill(tiny)
            acknowledged, refused = 40, None
            for n in range(1, 200):
                answer = http.post("/v1/events", json=batch(n), headers=AUTH)
                if answer.status_code == 503:
                    refused = n
                    break
                assert answer.status_code == 200, answer.text
                acknowledged += answer.json()["new"]
            assert refused is not None, "the disk never filled"
            assert answer.headers["Retry-After"] == "5" and "unavailable" in answer.json()["detail"]
            assert str(tiny) not in answer.text  # the path goes to the log only
            # reads still answer on a full disk
            assert http.post("/v1/users/writer1/recommendations", json={"k": 5}, headers=AUTH).status_code == 200
            assert http.get("/v1/users/writer1/profile", headers=AUTH).status_code == 200

            ballast.unlink()  # space comes back
            retried = http.post("/v1/events", json=batch(refused), headers=AUTH)
            assert retried.status_code == 200 and retried.json()["new"] == 40
            again = http.post("/v1/events", json=batch(refused), headers=AUTH)
            assert again.json()["new"] == 0  # a second retry is a replay, not a duplicate

        conn = SqliteDatabase(database).connection()
        query = "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events WHERE user LIKE 'writer%'"
        rows = conn.execute(query).fetchone()
        assert rows == (acknowledged + 40, acknowledged + 40)  # every acknowledged event, none twice
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.raw.close()
