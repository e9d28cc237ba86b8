"""On SQLite a request reads the user's state and what it computes from on the event loop — reads of a local
file, cheaper than a worker thread's hop — unless the user has a profile, whose vector Chroma holds; on
PostgreSQL every read is a round trip, made in a worker thread. Every way gives the same answer (real
MovieLens histories, real Chroma, SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.memory.service import Memory
from driftrec.models import ProfileEdit, RecommendationList
from tests.conftest import copy_of, on_backend

USER = "7"  # a seeded MovieLens user with a long history


def ids(answer: RecommendationList) -> list[str]:
    return [r.item.id for r in answer.items]


def counting_reads(memory: Memory) -> dict[str, int]:
    """Count the reads of what an answer is computed from, by where they ran: the event loop's thread (the
    test's main thread) or a worker thread."""
    counts = {"loop": 0, "worker": 0}
    read = memory.ranking_inputs_blocking

    def counted(*args: Any) -> Any:
        counts["loop" if threading.current_thread() is threading.main_thread() else "worker"] += 1
        return read(*args)

    memory.ranking_inputs_blocking = counted  # type: ignore[method-assign]
    return counts


async def test_an_answer_read_on_the_loop_is_the_one_a_worker_threads_read_gives(
    settings: Settings, seeded_data: Path, tmp_path: Path, database_url: str | None
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = on_backend(
        settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "ranking_answer_cache_s": 0.0}),
        database_url,
        data,
    )
    async with Recommender(own, llm=None) as rec:
        assert rec.memory is not None
        on_loop = rec.memory.db.local_reads
        assert on_loop == (database_url is None)
        counts = counting_reads(rec.memory)
        first = await rec.recommend(USER, k=10)  # the whole history read
        again = await rec.recommend(USER, k=10)  # from the process's cache, checked against the state
        newcomer = await rec.recommend("never-seen", k=5)  # no events at all
        assert counts == ({"loop": 3, "worker": 0} if on_loop else {"loop": 0, "worker": 3})
        assert not first.degraded and len(ids(first)) == 10 and len(ids(newcomer)) == 5
        assert again.model_dump(exclude={"seconds"}) == first.model_dump(exclude={"seconds"})

        # an edit makes a profile version (its vector is in Chroma): read in a worker thread on either store
        await rec.edit_profile(USER, [ProfileEdit(name="Drama", kind="dislike")])
        edited = [await rec.recommend(USER, k=10) for _ in range(2)]
        assert counts == ({"loop": 3, "worker": 2} if on_loop else {"loop": 0, "worker": 5})
        assert ids(edited[0]) == ids(edited[1])
        assert not [r for r in edited[1].items if "Drama" in r.item.genres]
