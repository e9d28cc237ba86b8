"""The second phase served: trained from the event store with the real served model (SmolLM2 on vLLM) judging
each user's learned top window, saved beside the learned ranker, loaded at start, applied by recommend()
with one LLM call; a phase made for another ranker or model is refused and every answer says why; a
judgement that does not come in time leaves the learned order, degraded. Whether it helps is the
harness's question (`driftrec eval ranker --llm-feature`, docs/results.md): for SmolLM2 it does not."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.llm import LLM
from driftrec.models import Action, Interaction
from driftrec.ranking.second_phase import COLUMNS, ranker_identity
from tests.conftest import SEED_USERS, copy_of

pytestmark = pytest.mark.vllm

WINDOW = 12


@pytest.fixture(scope="module")
async def served(
    settings: Settings, seeded_data: Path, llm: LLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Recommender]:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("second-phase"))
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
    async with Recommender(own, llm=llm) as rec:
        await rec.train_ranker(stages=2, pool=50, second_phase_users=len(SEED_USERS), window=WINDOW)
        yield rec


def test_the_phase_is_saved_for_this_ranker_and_this_model(served: Recommender, llm: LLM) -> None:
    card = json.loads((served.ranker_dir() / "second-phase.json").read_text())
    assert served.learned is not None and served.second_phase is not None
    assert card["model"] == llm.client.model and card["ranker"] == ranker_identity(served.learned.card)
    assert card["columns"] == list(COLUMNS) and card["window"] == WINDOW
    assert 10 <= card["users"] <= len(SEED_USERS) and card["stop_users"] >= 2
    assert set(card["stop_ndcg10"]) == {"learned order", "second phase"}
    assert abs(sum(card["importance"].values()) - 1) < 0.01 or sum(card["importance"].values()) == 0


async def test_recommend_reorders_the_learned_window_with_one_judgement(served: Recommender) -> None:
    assert served.memory is not None
    for user in SEED_USERS[:3]:
        seen = {e.item for e in await served.memory.events.history(user)}
        answer = await served.recommend(user, k=10)
        ids = [r.item.id for r in answer.items]
        assert answer.order == "learned" and answer.ranking == "second-phase" and not answer.degraded
        assert len(ids) == 10 and len(set(ids)) == 10 and not set(ids) & seen
        judged = [r for r in answer.items if "llm_rank" in r.extra]
        # the window is judged and re-ordered; what follows it keeps the learned order
        assert all(r.extra["retrieval_rank"] <= WINDOW for r in judged)
        assert all("logprob" in r.extra and r.extra["logprob"] <= 0 for r in judged)
        rest = [r.extra["retrieval_rank"] for r in answer.items if r.extra["retrieval_rank"] > WINDOW]
        assert rest == sorted(rest)


async def test_the_phase_is_loaded_at_start_and_refused_when_stale(
    served: Recommender, settings: Settings, seeded_data: Path, llm: LLM, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    shutil.copytree(served.ranker_dir(), data / "ranker")
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma"})
    async with Recommender(own, llm=llm) as again:
        assert again.second_phase is not None and again.learned_error is None
    async with Recommender(own, llm=None) as without_llm:  # no LLM configured: nothing to ask, not degraded
        answer = await without_llm.recommend(SEED_USERS[0], k=5)
        assert without_llm.second_phase is None and answer.ranking == "off" and not answer.degraded
    card = data / "ranker" / "second-phase.json"
    card.write_text(json.dumps(json.loads(card.read_text()) | {"model": "another-model"}))
    async with Recommender(own, llm=llm) as stale:
        answer = await stale.recommend(SEED_USERS[0], k=10)
    assert stale.second_phase is None and answer.order == "learned" and answer.degraded and len(answer.items) == 10
    assert answer.error and "RankerFileError" in answer.error and "another-model" in answer.error


async def test_a_judgement_past_the_deadline_leaves_the_learned_order_degraded(
    served: Recommender, settings: Settings, seeded_data: Path, llm: LLM, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    shutil.copytree(served.ranker_dir(), data / "ranker")
    ranking = served.settings.ranking.model_copy(update={"timeout_s": 0.001})
    own = settings.model_copy(update={"data_dir": data, "chroma_path": data / "chroma", "ranking": ranking})
    async with Recommender(own, llm=llm) as hurried:
        answer = await hurried.recommend(SEED_USERS[1], k=10)
    assert answer.ranking == "second-phase" and answer.degraded and answer.error and "LLMTimeout" in answer.error
    assert [r.extra["retrieval_rank"] for r in answer.items] == list(range(1, 11))  # the learned order, kept
    assert len({r.item.id for r in answer.items}) == 10 and answer.order == "learned"


async def test_an_event_has_the_next_answer_computed_before_it_is_asked(served: Recommender) -> None:
    """A live event schedules the user's next answer (one LLM call) in the background: the request after it
    finds the answer kept, for the history that includes the event; forgetting a user whose answer is being
    computed leaves no answer of theirs behind."""
    assert served.memory is not None
    user = SEED_USERS[5]
    before = await served.recommend(user, k=10)
    picked = before.items[0].item.id
    now = datetime.now(UTC)
    await served.observe([Interaction(user=user, item=picked, action=Action.RATE, rating=5.0, timestamp=now)])
    await served.refresher.idle()
    assert served.refresher.done >= 1 and served.refresher.failed == 0
    answer = await served.recommend(user, k=10)
    assert answer.cached and answer.ranking == "second-phase" and not answer.degraded
    assert picked not in {r.item.id for r in answer.items}  # computed after the event: it is seen now
    assert answer.seconds < before.seconds  # kept, not computed again

    bulk = SEED_USERS[6]  # a bulk import schedules nothing
    done = served.refresher.done
    await served.observe([Interaction(user=bulk, item=picked, action=Action.VIEW, timestamp=now)], upkeep=False)
    assert len(served.refresher) == 0 and served.refresher.done == done

    gone = SEED_USERS[7]
    await served.observe([Interaction(user=gone, item=picked, action=Action.VIEW, timestamp=now)])
    await asyncio.sleep(0.05)  # the answer is on its way (an LLM call takes longer)
    await served.forget_user(gone)
    await served.refresher.idle()
    assert served.last_recommendations(gone) is None
