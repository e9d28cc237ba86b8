"""The memory commands as a user runs them: `driftrec memory refresh --all` (a resumable batch job),
`driftrec profile show` (with the evidence), `driftrec memory forget` (what each store held), and
`driftrec llm models`. Real processes, on the session's vLLM as the endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.llm import LLM
from driftrec.memory.db import SqliteDatabase
from driftrec.memory.events import EventStore
from driftrec.models import Interaction
from tests.conftest import copy_of, endpoint_env

pytestmark = pytest.mark.vllm
T0 = datetime(2024, 5, 1, 20, 0, tzinfo=UTC)


def driftrec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftrec.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )


async def test_refresh_all_show_and_forget(settings: Settings, llm: LLM, seeded_data: Path, tmp_path: Path) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    db = SqliteDatabase(data / "memory.db")
    with db.transaction() as conn:
        conn.execute("DELETE FROM events")  # two small users instead of the hundred seeded ones
    films = {"ada": [("50", 5), ("172", 5), ("181", 4)], "bo": [("1", 5), ("71", 4), ("94", 2)]}
    await EventStore(db).append(
        Interaction(user=u, item=i, action="rate", rating=r, timestamp=T0 + timedelta(minutes=n))
        for u, rows in films.items()
        for n, (i, r) in enumerate(rows)
    )
    env = endpoint_env(settings, llm, data)
    (data / "refresh-all.checkpoint").write_text("ada\n")  # an earlier run got as far as ada

    resumed = await asyncio.to_thread(driftrec, env, "memory", "refresh", "--all", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    totals = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert totals["users"] == 2 and totals["skipped"] == 1 and totals["updated"] == 1 and totals["failed"] == 0
    assert not (data / "refresh-all.checkpoint").exists()  # done: nothing left to resume

    # The LLM could name only genres bo's events back (the schema's enum: Animation, Children's, Comedy,
    # Musical as interests, no dislike), so it claims at least one and grounding refuses none — before the
    # enum was narrowed, SmolLM2 in bfloat16 claimed Thriller for three family films. Each claim shows the
    # events behind it.
    as_json = json.loads((await asyncio.to_thread(driftrec, env, "profile", "show", "bo", "--json")).stdout)
    claims = [c for c in as_json["interests"] + as_json["dislikes"] if c["source"] == "llm"]
    assert claims and as_json["rejected"] == [], as_json
    assert {c["name"] for c in claims} <= {"Animation", "Children's", "Comedy", "Musical"} and not as_json["dislikes"]
    for claim in claims:
        assert claim["evidence"] and set(claim["evidence"]) <= {"1", "71", "94"}

    # bo's own correction: Animation (Toy Story 5/5, The Lion King 4/5), shown with the events behind it
    edited = await asyncio.to_thread(driftrec, env, "profile", "edit", "bo", "--add", "Animation")
    assert edited.returncode == 0, edited.stderr[-2000:]
    shown = await asyncio.to_thread(driftrec, env, "profile", "show", "bo")
    assert shown.returncode == 0 and "evidence" in shown.stdout and "Animation" in shown.stdout, shown.stdout
    edited_json = json.loads((await asyncio.to_thread(driftrec, env, "profile", "show", "bo", "--json")).stdout)
    animation = next(i for i in edited_json["interests"] if i["name"] == "Animation")
    assert animation["source"] == "edit" and set(animation["evidence"]) <= {"1", "71", "94"}

    forgot = await asyncio.to_thread(driftrec, env, "memory", "forget", "bo", "--json")
    assert forgot.returncode == 0, forgot.stderr[-2000:]
    report = json.loads(forgot.stdout.strip().splitlines()[-1])
    assert report["rows"]["events"] == 3 and report["rows"]["profile_versions"] == 2  # the refresh's, the edit's
    assert report["vectors"] == {"profiles": 2, "sessions": 1}  # one vector per profile version


def test_the_model_registry_is_listed(settings: Settings) -> None:
    env = {**os.environ, "DRIFTREC_CACHE_DIR": str(settings.cache_dir)}
    listed = driftrec(env, "llm", "models", "--json")
    assert listed.returncode == 0, listed.stderr
    models = {m["model"]: m for m in json.loads(listed.stdout)}
    assert models["qwen2.5-coder-0.5b"]["default"] and models["qwen2.5-coder-0.5b"]["tool_calls"] == "hermes"
    assert not models["smollm2-135m"]["default"]
