"""Memory you can trust: one user's data never reaches another, forgetting leaves no byte behind,
profile upkeep happens by itself, heavy users refresh, failures are reported as failures.

Real embedded vLLM (SmolLM2), real embedded Chroma, real MovieLens-100K histories."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.data import Dataset, load_movielens_100k
from driftrec.llm import LLM, LLMClient
from driftrec.memory.db import SCHEMA_VERSION, SqliteDatabase
from driftrec.memory.service import Memory
from driftrec.memory.sessions import sessionize
from driftrec.models import Interaction
from tests.conftest import copy_of, fresh_database, on_backend

pytestmark = pytest.mark.vllm
T0 = datetime(2024, 3, 1, 20, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ml100k(settings: Settings) -> Dataset:
    return load_movielens_100k(settings.cache_dir)


def local(settings: Settings, where: Path, **extra: object) -> Settings:
    return settings.model_copy(
        update={"data_dir": where, "chroma_path": where / "chroma", "chroma_mode": "embedded", **extra}
    )


def client_sessions(user: str, items: list[list[tuple[str, float]]]) -> list[Interaction]:
    """Events whose client numbers its sessions "1", "2", ... (as every client may)."""
    events = []
    for n, session in enumerate(items, start=1):
        for m, (item, rating) in enumerate(session):
            at = T0 + timedelta(days=n, minutes=m)
            events.append(
                Interaction(user=user, item=item, action="rate", rating=rating, timestamp=at, session_id=str(n))
            )
    return events


async def test_two_users_with_the_same_session_ids_each_get_exactly_their_own_summaries(
    tmp_path: Path, settings: Settings, ml100k: Dataset, llm: LLM, database_url: str | None
) -> None:
    # Ada rates sci-fi highly; Bo rates comedies highly and the same sci-fi low. Both clients say "1", "2".
    ada = client_sessions("ada", [[("50", 5), ("172", 5), ("181", 4)], [("82", 5), ("96", 4)]])
    bo = client_sessions("bo", [[("1", 5), ("71", 4), ("50", 1)], [("94", 5), ("172", 2)]])
    memory = Memory.open(on_backend(local(settings, tmp_path), database_url), ml100k.items, llm)
    await memory.observe(ada + bo)
    now = T0 + timedelta(days=5)
    results = await asyncio.gather(memory.refresh_profile("ada", now), memory.refresh_profile("bo", now))
    for result in results:
        assert result.error is None and result.updated and result.summarized == 2 and result.folded == 2

    rows = memory.db.connection().execute("SELECT user, session_id, applied FROM summaries ORDER BY user, session_id")
    assert rows.fetchall() == [("ada", "1", 1), ("ada", "2", 1), ("bo", "1", 1), ("bo", "2", 1)]
    for user, events in (("ada", ada), ("bo", bo)):
        own = {e.item for e in events}
        for summary in await memory.recent_summaries(user, 10):
            assert summary.user == user and {e.item for e in summary.liked + summary.disliked} <= own
        profile, _ = await memory.profile(user)
        for claim in profile.interests + profile.dislikes:
            assert set(claim.evidence) <= own, (user, claim)  # evidence only from the user's own events
        recalled = await asyncio.to_thread(memory.summaries.recall_blocking, user, "movies", 5)
        assert sorted(sid for sid, _ in recalled) == ["1", "2"]
    # Chroma knows neither user by name: ids and metadata carry pseudonyms
    got = memory.summaries.collection.get(include=["metadatas", "documents"])
    assert len(got["ids"]) == 4
    # each id is "<pseudonym>:<hashed session id>" -- all hex, so a user id can only appear by chance
    # inside a hash (24 hex digits contain "ada" about 2 % of the time); check the form, not substrings
    tags = {memory.tag("ada"), memory.tag("bo")}
    for vector_id in got["ids"]:
        tag, _, session = vector_id.partition(":")
        assert tag in tags and len(session) == 24 and all(c in "0123456789abcdef" for c in session), vector_id
    assert {m["subject"] for m in got["metadatas"]} == tags


def raw_hits(paths: list[Path], needles: list[bytes]) -> dict[str, list[str]]:
    """Which files contain which needle, byte for byte (also UTF-16, as some stores write text)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        data = path.read_bytes()
        for needle in needles:
            text = needle.decode()  # as bytes, UTF-16 (SQLite may) and UTF-32 (numpy's str arrays)
            if needle in data or text.encode("utf-16-le") in data or text.encode("utf-32-le") in data:
                found.setdefault(needle.decode(), []).append(str(path))
    return found


async def test_forgetting_a_user_leaves_no_byte_of_them_in_any_file(
    tmp_path: Path, settings: Settings, ml100k: Dataset, llm: LLM, seeded_data: Path
) -> None:
    user, phrase, neighbour = "zq-forget-7731", "periwinkle marmalade nineteen", "1"
    data = copy_of(seeded_data, tmp_path / "data")
    logged = LLM(
        LLMClient(
            llm.client.base_url,
            llm.client.model,
            log_path=data / "logs" / "llm.jsonl",
            cache_path=data / "llm-cache.sqlite",
            timeout_s=600,
        ),
        llm.tokens,
        llm.context_window,
    )
    own = local(
        settings,
        data,
        llm_log_path=data / "logs" / "llm.jsonl",
        llm_cache_path=data / "llm-cache.sqlite",
        index_snapshot_events=10,  # the saved candidate indexes take their events in too
    )
    async with Recommender(own, llm=logged) as rec:
        memory = rec._require()
        history = [e.model_copy(update={"user": user, "event_id": None}) for e in ml100k.by_user()["13"][:40]]
        await rec.observe(history)
        async for _ in rec.chat(user, f"I'm tired of horror, {phrase}, recommend something funny"):
            pass
        refreshed = await rec.refresh_profile(user, now=history[-1].timestamp + timedelta(days=1))
        assert refreshed.updated and refreshed.summarized >= 1
        await rec.recommend(user, k=5)
        await rec.refit()
        saved = rec.snapshots.files()[0][2]
        assert user.encode("utf-32-le") in saved.read_bytes()  # precondition: a saved index holds them
        neighbour_before = await rec.profile(neighbour), await memory.events.count(neighbour)
        logged_records = len((data / "logs" / "llm.jsonl.users" / f"{memory.tag(user)}.jsonl").read_text().splitlines())

        report = await rec.forget_user(user)

        assert report.rows["events"] == 40 and report.rows["chat_turns"] == 2 and report.rows["statements"] >= 1
        assert report.rows["summaries"] == refreshed.summarized and report.rows["profile_versions"] == 1
        assert report.vectors == {"profiles": 1, "sessions": refreshed.summarized}
        assert report.llm["log"] == logged_records > 0 and report.llm["cache"] > 0
        assert report.files["index_snapshots"] >= 1
        # a neighbour is intact
        assert (await rec.profile(neighbour), await memory.events.count(neighbour)) == neighbour_before
        assert (await rec.profile(user)).version == 0 and await memory.events.count(user) == 0

    files = [p for p in data.rglob("*") if p.is_file()]
    files += [p for p in (settings.cache_dir / "logs").glob("*.log") if p.is_file()]  # the vLLM server's log
    assert raw_hits(files, [user.encode(), phrase.encode()]) == {}


async def test_upkeep_refreshes_a_closed_session_by_itself_and_survives_a_restart(
    tmp_path: Path, settings: Settings, ml100k: Dataset, llm: LLM, seeded_data: Path, database_url: str | None
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = on_backend(local(settings, data, memory_upkeep=True, memory_upkeep_interval_s=0.2), database_url, data)
    long_ago = datetime.now(UTC) - timedelta(days=2)  # the session closed long ago: due at once
    events = [
        Interaction(user="eve", item=i, action="rate", rating=5, timestamp=long_ago + timedelta(minutes=n))
        for n, i in enumerate(["50", "172", "181"])
    ]
    async with Recommender(own, llm=None) as offline:  # recorded while no LLM runs: upkeep can't happen yet
        await offline.observe(events, upkeep=True)
        assert offline.upkeep is None
    await asyncio.to_thread(Memory.open(own, ml100k.items, None).schedule_blocking, {"eve": long_ago.timestamp()})

    async with Recommender(own, llm=llm) as rec:  # a restart with the LLM: the pending upkeep is found again
        assert rec.upkeep is not None

        async def due() -> list[str]:
            return await asyncio.to_thread(rec._require().due_blocking, datetime.now(UTC).timestamp(), 10)

        # done with eve: the new version committed, then her upkeep row dropped (a moment later, in its own hop)
        for _ in range(600):
            if (await rec.profile("eve")).version >= 1 and not await due():
                break
            await asyncio.sleep(0.5)
        profile = await rec.profile("eve")
        assert profile.version == 1 and rec.upkeep.stats.refreshed >= 1
        assert await due() == []
        # a second pass has nothing to do: summaries are idempotent per session
        await rec.upkeep.run_once()
        assert (await rec.profile("eve")).version == 1


async def test_a_heavy_user_refreshes_in_batches_within_the_context_window(
    tmp_path: Path, settings: Settings, ml100k: Dataset, llm: LLM
) -> None:
    by_user = ml100k.by_user()
    gap = timedelta(minutes=30)
    user = max(by_user, key=lambda u: len(sessionize(by_user[u], gap)))
    sessions = sessionize(by_user[user], gap)[:12]
    memory = Memory.open(local(settings, tmp_path, memory_fold_batch=4), ml100k.items, llm)
    await memory.observe(e for s in sessions for e in s.interactions)
    result = await memory.refresh_profile(user, now=sessions[-1].ended_at + timedelta(days=1))
    assert result.error is None, result.error
    assert result.summarized == 12 and result.folded == 12 and len(result.prompts) == 3  # 12 summaries, 4 a prompt
    assert result.profile.version == 1
    # a refresh bounded per request leaves the rest for later and says so
    memory2 = Memory.open(local(settings, tmp_path / "b"), ml100k.items, llm)
    await memory2.observe(e for s in sessions[:5] for e in s.interactions)
    bounded = await memory2.refresh_profile(user, now=sessions[4].ended_at + timedelta(days=1), max_sessions=2)
    assert (bounded.summarized, bounded.remaining) == (2, 3)


def test_a_v1_memory_file_is_migrated_with_its_summaries(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE summaries (session_id TEXT PRIMARY KEY, user TEXT NOT NULL, ended_at REAL NOT NULL,
                                body TEXT NOT NULL, applied INTEGER NOT NULL DEFAULT 0);
        INSERT INTO summaries VALUES ('u7:1700000000', 'u7', 1.0, '{"user": "u7", "session_id": "u7:1700000000"}', 1);
        INSERT INTO summaries VALUES ('chat-1', 'u8', 2.0, '{"user": "u8", "session_id": "chat-1"}', 0);
        """
    )
    conn.close()
    db = SqliteDatabase(path)
    assert db.schema_version() == SCHEMA_VERSION == 5
    rows = db.connection().execute(
        "SELECT user, session_id, applied, json_extract(body, '$.session_id') FROM summaries"
    )
    assert sorted(rows.fetchall()) == [("u7", "auto:1700000000", 1, "auto:1700000000"), ("u8", "chat-1", 0, "chat-1")]
    SqliteDatabase(path)  # opening again is a no-op
    assert db.connection().execute("SELECT COUNT(*) FROM summaries").fetchone()[0] == 2


async def test_a_forget_racing_a_refresh_leaves_nothing_of_the_user(
    tmp_path: Path, settings: Settings, ml100k: Dataset, llm: LLM, database_url: str | None
) -> None:
    ada = client_sessions("ada", [[("50", 5), ("172", 5)], [("82", 5)]])
    bo = client_sessions("bo", [[("1", 5), ("71", 4)]])
    memory = Memory.open(on_backend(local(settings, tmp_path), database_url), ml100k.items, llm)
    await memory.observe(ada + bo)
    now = T0 + timedelta(days=5)
    refresh = asyncio.create_task(memory.refresh_profile("ada", now))
    await asyncio.sleep(0.05)  # the refresh is under way (summarizing with the LLM)
    report, _ = await asyncio.gather(memory.forget_user("ada"), refresh)
    assert report.rows["events"] == 3  # forget waited for the refresh, then took everything

    rows = {
        t: memory.db.connection().execute(f"SELECT COUNT(*) FROM {t} WHERE user = 'ada'").fetchone()[0]
        for t in report.rows
    }
    assert set(rows.values()) == {0}, rows
    for collection in (memory.profiles.collection, memory.summaries.collection):
        assert collection.get(where={"subject": memory.tag("ada")})["ids"] == []
    assert (await memory.profile("ada"))[0].version == 0
    assert (await memory.events.count("bo")) == 2  # the neighbour is intact


def test_a_v4_postgresql_store_is_migrated_to_the_events_sequence_index(postgres: str, tmp_path: Path) -> None:
    """A database made by the previous release (schema v4) gains v5's index when a process opens it, and the
    step is recorded once; its events are untouched."""
    import psycopg

    from driftrec.memory.db import open_database_url
    from driftrec.memory.events import EventStore

    url = fresh_database(postgres)
    store = EventStore(open_database_url(url, tmp_path))
    assert store.append_blocking([Interaction(user="u1", item="1", timestamp=datetime(2024, 1, 1, tzinfo=UTC))]) == 1
    with psycopg.connect(url, autocommit=True) as conn:  # back to what v4 left
        conn.execute("DROP INDEX events_user_seq")
        conn.execute("DELETE FROM schema_migrations WHERE version = 5")

    db = open_database_url(url, tmp_path)
    assert db.schema_version() == SCHEMA_VERSION == 5
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'events_user_seq'").fetchone() == (
            'CREATE INDEX events_user_seq ON public.events USING btree ("user", seq)',
        )
        steps = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert steps == [(v,) for v in range(1, 6)]
    assert [e.item for e in EventStore(db).all_blocking()] == ["1"]


def test_profiles_and_summaries_of_driftrec_0_1_are_migrated_without_the_user_id(
    tmp_path: Path, settings: Settings, ml100k: Dataset
) -> None:
    from driftrec.models import Interest, InterestProfile, SessionSummary

    own = local(settings, tmp_path)
    memory = Memory.open(own, ml100k.items, None)
    with memory.db.transaction() as conn:  # as a 0.1 memory file would be: never migrated
        conn.execute("DELETE FROM meta WHERE key LIKE 'chroma-v2:%'")
    old = InterestProfile(
        user="ada",
        version=1,
        interests=[Interest(name="Sci-Fi", weight=0.5, first_seen=T0, last_seen=T0)],
        updated_at=T0,
    )
    vector = memory.profiles.embedder.embed_passages(["Sci-Fi"])[0].tolist()
    # what 0.1 wrote: the body in Chroma metadata, ids and metadata naming the user
    memory.profiles.collection.upsert(
        ids=["ada@v1"], embeddings=[vector], documents=["Long-term interests of user ada"],
        metadatas=[{"user": "ada", "version": 1, "profile": old.model_dump_json()}],
    )  # fmt: skip
    memory.summaries.collection.upsert(
        ids=["1"], embeddings=[vector], documents=["Liked: Star Wars"], metadatas=[{"user": "ada", "ended_at": 1.0}]
    )
    summary = SessionSummary(user="ada", session_id="1", themes=["Sci-Fi"])
    with memory.db.transaction() as conn:
        conn.execute("INSERT INTO profile_heads VALUES ('ada', 1, 0)")
        conn.execute("INSERT INTO summaries VALUES ('ada', '1', 1.0, ?, 1)", (summary.model_dump_json(),))

    reopened = Memory.open(own, ml100k.items, None)
    current, vector_now = asyncio.run(reopened.profile("ada"))
    assert current == old and vector_now is not None
    for collection in (reopened.profiles.collection, reopened.summaries.collection):
        got = collection.get(include=["metadatas"])
        # the legacy id ("ada@v1", "1") became "<pseudonym>@v1" / "<pseudonym>:<hashed session id>"
        assert len(got["ids"]) == 1 and got["ids"][0].startswith(reopened.tag("ada")), got["ids"]
        assert got["metadatas"][0]["subject"] == reopened.tag("ada") and "user" not in got["metadatas"][0]
    assert Memory.open(own, ml100k.items, None).profiles.migrate_legacy_blocking() == 0  # once only
