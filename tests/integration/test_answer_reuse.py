"""A repeat of the same request reuses the user's latest answer — and never once anything of the user's it
was computed from has changed, through this process or another one on the same store; other users' events
reach it within its time to live, or at once when it follows the indexes (real MovieLens histories, real
Chroma, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.models import Filters, Interaction, ProfileEdit, RecommendationList, SessionSummary, StatedPreference
from tests.conftest import copy_of, on_backend

USER = "7"  # a seeded MovieLens user with a long history


def ids(answer: RecommendationList) -> list[str]:
    return [r.item.id for r in answer.items]


async def test_a_repeat_is_reused_until_the_user_or_the_indexes_change(
    settings: Settings, seeded_data: Path, tmp_path: Path, database_url: str | None
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = on_backend(
        settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "index_poll_s": 0.0}),
        database_url,
        data,
    )
    strict = own.model_copy(update={"ranking_answer_follows_indexes": True})
    async with (
        Recommender(own, llm=None) as writer,
        Recommender(own, llm=None) as reader,
        Recommender(strict, llm=None) as follower,
    ):
        first = await reader.recommend(USER, k=10)
        assert not first.cached and not first.degraded and len(ids(first)) == 10
        again = await reader.recommend(USER, k=10)
        assert again.cached and ids(again) == ids(first)
        assert again.model_dump(exclude={"cached", "seconds"}) == first.model_dump(exclude={"cached", "seconds"})
        # the HTTP path's text: a repeat sends the kept text as kept, a computed answer its one serialization
        sent = RecommendationList.model_validate_json(await reader.recommend_json(USER, k=10))
        assert sent.cached and sent.model_dump(exclude={"seconds"}) == again.model_dump(exclude={"seconds"})
        computed = RecommendationList.model_validate_json(await reader.recommend_json(USER, k=4))
        assert not computed.cached and ids(computed) == ids(first)[:4]

        # another request of the same user is computed, and becomes the latest
        assert not (await reader.recommend(USER, k=5)).cached
        assert not (await reader.recommend(USER, k=10, exclude=[ids(first)[0]])).cached
        assert not (await reader.recommend(USER, k=10, filters=Filters(genres=["Comedy"]))).cached
        assert (await reader.recommend(USER, k=10, filters=Filters(genres=["Comedy"]))).cached
        assert not (await reader.recommend(USER, k=10, now=datetime.now(UTC))).cached  # a replay's own clock

        # the user watches the top item through the other process: the next answer is new and leaves it out
        top = (await reader.recommend(USER, k=10)).items[0].item.id
        assert (await reader.recommend(USER, k=10)).cached
        await writer.observe([Interaction(user=USER, item=top, action="view", timestamp=datetime.now(UTC))])
        after_view = await reader.recommend(USER, k=10)
        assert not after_view.cached and top not in ids(after_view)
        await reader.refit()  # the view moved the log: the catch-up the poll started is done
        await reader.recommend(USER, k=10)

        # the user's own edit (a new profile version and a standing dislike), through the other process
        assert (await reader.recommend(USER, k=10)).cached
        await writer.edit_profile(USER, [ProfileEdit(name="Drama", kind="dislike")])
        after_edit = await reader.recommend(USER, k=10)
        assert not after_edit.cached
        assert not [r for r in after_edit.items if "Drama" in r.item.genres]

        # a preference the user stated (in the chat), through the other process
        assert (await reader.recommend(USER, k=10)).cached
        await writer.state(USER, [StatedPreference(user=USER, name="Comedy", polarity="dislike", text="no comedies")])
        after_statement = await reader.recommend(USER, k=10)
        assert not after_statement.cached
        assert not [r for r in after_statement.items if "Comedy" in r.item.genres]

        # other users' events move the candidate indexes: by default a kept answer lags them for at most its
        # time to live (a trickle of writes would otherwise end every kept answer); one that follows the
        # indexes is computed again
        assert (await reader.recommend(USER, k=10)).cached
        await follower.refit()  # up to date with the writes above
        await follower.recommend(USER, k=10)
        assert (await follower.recommend(USER, k=10)).cached
        now = datetime.now(UTC)
        await writer.observe(
            Interaction(user=f"fan{n}", item="1500", action="click", timestamp=now - timedelta(minutes=n))
            for n in range(5)
        )
        for rec in (reader, follower):
            await rec.recommend("someone-else", k=3)  # the poll notices the log moved
            await rec.refit()
        assert (await reader.recommend(USER, k=10)).cached
        assert not (await follower.recommend(USER, k=10)).cached

        # forgetting the user through the other process: nothing of theirs is reused or kept
        assert (await reader.recommend(USER, k=10)).cached
        await writer.forget_user(USER)
        await reader.recommend("someone-else", k=3)  # the poll sees the store's generation move
        assert reader.last_recommendations(USER) is None
        fresh = await reader.recommend(USER, k=10)
        assert not fresh.cached
        assert reader.answers.hits >= 5


async def test_reuse_can_be_turned_off(settings: Settings, seeded_data: Path, tmp_path: Path) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "ranking_answer_cache_s": 0.0})
    async with Recommender(own, llm=None) as rec:
        first, again = await rec.recommend(USER, k=10), await rec.recommend(USER, k=10)
        assert not first.cached and not again.cached and ids(first) == ids(again)
        assert rec.last_recommendations(USER) == again


async def test_the_state_a_repeat_checks_moves_with_every_write_of_the_user_and_no_one_else(
    settings: Settings, seeded_data: Path, tmp_path: Path, database_url: str | None
) -> None:
    """A repeat reads one statement instead of the user's five stores: it must move whenever any of them
    changes for this user (and a stated preference expiring), and never with another user's writes."""
    data = copy_of(seeded_data, tmp_path / "data")
    own = on_backend(settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"}), database_url, data)
    async with Recommender(own, llm=None) as rec:
        memory = rec.memory
        assert memory is not None
        now = datetime.now(UTC)

        def state() -> tuple:
            return memory.state_blocking(USER, now)

        seen = [state()]
        assert state() == seen[0]  # nothing written: the same

        async def moved() -> None:
            current = state()
            assert current not in seen
            seen.append(current)

        await rec.observe([Interaction(user="someone-else", item="50", action="view", timestamp=now)])
        await rec.state("someone-else", [StatedPreference(user="someone-else", name="Drama", polarity="like")])
        assert state() == seen[-1]  # another user's writes do not move it

        await rec.observe([Interaction(user=USER, item="50", action="view", timestamp=now)])
        await moved()
        await rec.edit_profile(USER, [ProfileEdit(name="Horror", kind="dislike")])  # profile head and an edit
        await moved()
        await rec.state(USER, [StatedPreference(user=USER, name="Comedy", polarity="like", created_at=now)])
        await moved()
        later = now + timedelta(hours=own.memory.statement_hours, minutes=1)
        assert memory.state_blocking(USER, later) != seen[-1]  # the statement is no longer in force then
        summary = SessionSummary(user=USER, session_id="a-session", themes=["comedy"])
        await asyncio.to_thread(memory.summaries.save_blocking, summary, now, memory.titles)
        await moved()

        await rec.forget_user(USER)
        await moved()
        await rec.observe([Interaction(user=USER, item="50", action="view", timestamp=now)])  # they come back
        await moved()
