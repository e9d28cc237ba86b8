"""Interest memory with the real embedded model, real Chroma and real MovieLens-100K histories — each test on
the embedded SQLite store and on a real PostgreSQL server (``database_url``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftrec.cli import app
from driftrec.config import Settings
from driftrec.data import Dataset, load_movielens_100k
from driftrec.llm import LLM, LLMClient
from driftrec.memory.profiles import StaleProfileError, diff_profiles
from driftrec.memory.replay import replay
from driftrec.memory.service import Memory
from driftrec.memory.sessions import sessionize
from driftrec.models import SessionSummary
from driftrec.plots import profile_timeline as plot_timeline
from tests.conftest import on_backend

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


@pytest.fixture(scope="module")
def users_with_sessions(ml100k: Dataset) -> list[str]:
    """Users whose history has at least three 30-minute sessions, smallest histories first."""
    by_user = ml100k.by_user()
    many = [u for u, events in by_user.items() if len(sessionize(events, timedelta(minutes=30))) >= 3]
    return sorted(many, key=lambda u: len(by_user[u]))


def memory_in(tmp_path: Path, settings: Settings, ml100k: Dataset, llm: LLM | None, url: str | None) -> Memory:
    local = settings.model_copy(
        update={"data_dir": tmp_path, "chroma_path": tmp_path / "chroma", "chroma_mode": "embedded"}
    )
    return Memory.open(on_backend(local, url), ml100k.items, llm)


async def test_replay_builds_valid_versioned_profiles(
    tmp_path: Path,
    settings: Settings,
    ml100k: Dataset,
    llm: LLM,
    users_with_sessions: list[str],
    database_url: str | None,
) -> None:
    user = users_with_sessions[0]
    memory = memory_in(tmp_path, settings, ml100k, llm, database_url)
    results = await replay(memory, ml100k.by_user()[user], max_sessions=3)
    assert [r.error for r in results] == [None, None, None]
    assert [r.profile.version for r in results] == [1, 2, 3]

    sessions = {s.session_id: s for s in sessionize(ml100k.by_user()[user], memory.gap)}
    assert memory.summaries.pending_blocking(user) == []  # every summary was folded into a version
    for session_id in memory.summaries.summarized_blocking(user):
        items = {e.item for e in sessions[session_id].interactions}
        row = memory.db.connection().execute(
            "SELECT body FROM summaries WHERE user = ? AND session_id = ?", (user, session_id)
        )
        summary = SessionSummary.model_validate_json(row.fetchone()[0])
        assert {e.item for e in summary.liked + summary.disliked} <= items  # only items of that session
        assert set(summary.themes) <= set(memory.vocabulary or summary.themes)

    history = await memory.history(user)
    assert [p.version for p in history] == [1, 2, 3]
    for profile in history:
        assert all(0.0 <= i.weight <= 1.0 for i in profile.interests)
        assert {i.name for i in profile.interests} <= set(memory.vocabulary)
    current, vector = await memory.profile(user)
    assert current.version == 3 and vector is not None and vector.shape == (384,)
    change = diff_profiles(history[0], history[2])
    assert change["from"] == 1 and change["to"] == 3

    # episodic memory: past sessions come back by similarity, only this user's
    recalled = await asyncio.to_thread(memory.summaries.recall_blocking, user, "movies the user liked", 2)
    assert recalled and {sid for sid, _ in recalled} <= memory.summaries.summarized_blocking(user)

    # the timeline: a PNG of weights over versions, and the CLI reads the same history back
    png = plot_timeline(history, tmp_path / "timeline.png", f"user {user}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    env = {
        "DRIFTREC_DATA_DIR": str(tmp_path),
        "DRIFTREC_CHROMA_PATH": str(tmp_path / "chroma"),
        "DRIFTREC_CACHE_DIR": str(settings.cache_dir),
        **({"DRIFTREC_DATABASE_URL": database_url} if database_url else {}),
    }
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["profile", "history", user, "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert [p["version"] for p in json.loads(shown.stdout)] == [1, 2, 3]

    restored = await memory.profiles.rollback(user, 1)
    assert restored.version == 4
    assert [i.name for i in restored.interests] == [i.name for i in history[0].interests]
    assert (await memory.profile(user))[0].version == 4


async def test_a_free_vocabulary_builds_profiles_on_the_embedded_server(
    tmp_path: Path, settings: Settings, ml100k: Dataset, llm: LLM, users_with_sessions: list[str]
) -> None:
    """Names as free text (``DRIFTREC_MEMORY_VOCABULARY=free``): the schemas the server is sent are ones its
    grammar backend (xgrammar) accepts — a pattern with length bounds was refused with a 400 before — and
    every name kept is one the user's events back."""
    free = settings.model_copy(update={"memory": settings.memory.model_copy(update={"vocabulary": "free"})})
    memory = memory_in(tmp_path, free, ml100k, llm, None)
    assert memory.vocabulary is None
    user = users_with_sessions[0]
    results = await replay(memory, ml100k.by_user()[user], max_sessions=2)
    assert [r.error for r in results] == [None, None] and [r.profile.version for r in results] == [1, 2]
    genres = {g.lower() for e in ml100k.by_user()[user] for g in ml100k.items[e.item].genres}
    for profile in await memory.history(user):
        assert all(i.name.strip() and " ".join(i.name.lower().split()) in genres for i in profile.interests)


async def test_llm_down_keeps_the_old_profile_and_retries_later(
    tmp_path: Path,
    settings: Settings,
    ml100k: Dataset,
    llm: LLM,
    users_with_sessions: list[str],
    database_url: str | None,
) -> None:
    user = users_with_sessions[1]
    events = ml100k.by_user()[user]
    first = sessionize(events, timedelta(minutes=30))[0]
    dead = LLM(
        LLMClient("http://127.0.0.1:9/v1", llm.client.model, timeout_s=2, max_retries=1, backoff_s=0.01),
        llm.tokens,
        llm.context_window,
    )
    memory = memory_in(tmp_path, settings, ml100k, dead, database_url)
    await memory.observe(first.interactions)
    result = await memory.refresh_profile(user, now=first.ended_at + timedelta(hours=1))
    assert not result.updated and result.profile.version == 0 and result.summarized == 0
    assert result.status == "failed" and result.failed == 1 and result.error  # reported, never error=None
    memory.llm = llm  # the server is back
    result = await memory.refresh_profile(user, now=first.ended_at + timedelta(hours=1))
    assert result.updated and result.profile.version == 1 and result.summarized == 1


@pytest.mark.parametrize("failpoint", ["profile.after_version_write", "profile.before_head_move"])
async def test_a_kill_during_an_update_leaves_the_old_profile_current(
    tmp_path: Path,
    settings: Settings,
    ml100k: Dataset,
    llm: LLM,
    users_with_sessions: list[str],
    failpoint: str,
    database_url: str | None,
) -> None:
    """A real process dies (SIGKILL) between the writes of an update: after the new version's vector is
    written, or inside the transaction that stores it and moves the head."""
    user = users_with_sessions[2]
    sessions = sessionize(ml100k.by_user()[user], timedelta(minutes=30))
    memory = memory_in(tmp_path, settings, ml100k, llm, database_url)
    await memory.observe(sessions[0].interactions)
    before = (await memory.refresh_profile(user, now=sessions[0].ended_at + timedelta(hours=1))).profile
    assert before.version == 1
    await memory.observe(sessions[1].interactions)

    script = textwrap.dedent(f"""
        import asyncio
        from datetime import timedelta
        from driftrec.config import load_settings
        from driftrec.data import load_movielens_100k
        from driftrec.llm import open_llm
        from driftrec.memory.service import Memory
        from driftrec.memory.sessions import sessionize

        async def main():
            settings = load_settings()
            data = load_movielens_100k(settings.cache_dir)
            llm = await open_llm(settings, warm=False)
            memory = Memory.open(settings, data.items, llm)
            end = sessionize(data.by_user()[{user!r}], timedelta(minutes=30))[1].ended_at
            await memory.refresh_profile({user!r}, now=end + timedelta(hours=1))
            print("NOT KILLED", flush=True)

        asyncio.run(main())
    """)
    env = {
        **os.environ,
        "DRIFTREC_FAILPOINT": failpoint,
        "DRIFTREC_DATA_DIR": str(tmp_path),
        "DRIFTREC_CHROMA_PATH": str(tmp_path / "chroma"),
        "DRIFTREC_CACHE_DIR": str(settings.cache_dir),
        "DRIFTREC_LLM_BASE_URL": llm.client.base_url,
        "DRIFTREC_LLM_MODEL": llm.client.model,
        **({"DRIFTREC_DATABASE_URL": database_url} if database_url else {}),
    }
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # died at the failpoint, by SIGKILL
    assert "NOT KILLED" not in proc.stdout

    reopened = memory_in(tmp_path, settings, ml100k, llm, database_url)
    current, _ = await reopened.profile(user)
    assert current == before  # the old version is current and intact
    assert [p.version for p in await reopened.history(user)] == [1]
    retried = await reopened.refresh_profile(user, now=sessions[1].ended_at + timedelta(hours=1))
    assert retried.updated and retried.profile.version == 2  # the orphan is overwritten, no gap
    assert [p.version for p in await reopened.history(user)] == [1, 2]


async def test_concurrent_updates_never_overwrite_a_newer_profile(
    tmp_path: Path,
    settings: Settings,
    ml100k: Dataset,
    llm: LLM,
    users_with_sessions: list[str],
    database_url: str | None,
) -> None:
    user = users_with_sessions[3]
    sessions = sessionize(ml100k.by_user()[user], timedelta(minutes=30))
    memory = memory_in(tmp_path, settings, ml100k, llm, database_url)
    await memory.observe(sessions[0].interactions)
    now = sessions[0].ended_at + timedelta(hours=1)
    first, second = await asyncio.gather(memory.refresh_profile(user, now=now), memory.refresh_profile(user, now=now))
    assert sorted([first.updated, second.updated]) == [False, True]  # serialized: the second found nothing new
    assert (await memory.profile(user))[0].version == 1

    # across processes the head check decides: a writer holding an old head loses
    other = memory_in(tmp_path, settings, ml100k, llm, database_url)
    stale, _ = await other.profile(user)
    await memory.observe(sessions[1].interactions)
    assert (await memory.refresh_profile(user, now=sessions[1].ended_at + timedelta(hours=1))).profile.version == 2
    with pytest.raises(StaleProfileError):
        await other.profiles.commit(stale.model_copy(update={"version": 2}), expected_head=1)
    assert (await memory.profile(user))[0].version == 2


async def test_forget_user_leaves_nothing_behind(
    tmp_path: Path,
    settings: Settings,
    ml100k: Dataset,
    llm: LLM,
    users_with_sessions: list[str],
    database_url: str | None,
) -> None:
    user, neighbour = users_with_sessions[4], users_with_sessions[5]
    memory = memory_in(tmp_path, settings, ml100k, llm, database_url)
    for someone in (user, neighbour):
        await replay(memory, ml100k.by_user()[someone], max_sessions=1)
    report = await memory.forget_user(user)
    assert report.rows["events"] == len(sessionize(ml100k.by_user()[user], memory.gap)[-1].interactions)
    assert report.rows["profile_versions"] == 1 and report.vectors["profiles"] == 1 and report.vectors["sessions"] == 1

    conn = memory.db.connection()
    for table in ("events", "summaries", "profile_heads", "profile_versions"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE user = ?", (user,)).fetchone()[0] == 0, table
    for collection in (memory.profiles.collection, memory.summaries.collection):
        assert collection.get(where={"subject": memory.tag(user)})["ids"] == []
        assert collection.get(where={"subject": memory.tag(neighbour)})["ids"] != []
    assert (await memory.profile(user))[0].version == 0
    # the neighbour is untouched
    assert conn.execute("SELECT COUNT(*) FROM events WHERE user = ?", (neighbour,)).fetchone()[0] > 0
    assert (await memory.profile(neighbour))[0].version == 1
