"""The learned ranking stage trained for session replay: each training example is a session's new items
given everything before it (every item of the session a relevant label), from every user with at least
two known sessions — evaluated users up to the session before the stage's target, other users all theirs.
The latest cut point decides early stopping and the setting and is not trained on; each cut point's
sources and features are fitted on everyone's events before their own cut (``ranking.training``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.protocols import Case, SessionSplit
from driftrec.memory.sessions import sessionize
from driftrec.models import Interaction
from driftrec.ranking.learned import LearnedRanker, catalog_fingerprint
from driftrec.ranking.training import Cases, Target, build_pool, examples_at
from driftrec.retrieval import ItemIndex

K = 20
POOL = 100  # each source's top-n in the pool (as serving builds it)
LEARNED = "driftrec-learned (LambdaMART over the pool)"
LEARNED_CUTS = 4  # session cut points per training user: the latest decides early stopping


def sessions_known(
    dataset: Dataset, splits: Mapping[str, SessionSplit], stage: str, gap_minutes: float
) -> tuple[dict[str, list[list[Interaction]]], list[Interaction]]:
    """What the learned ranker may train on when predicting ``stage``: per user the sessions before the
    stage's target (every session for users who are not evaluated), and the events of users with a
    single session (no example, always in the log)."""
    sessions: dict[str, list[list[Interaction]]] = {}
    single: list[Interaction] = []
    for user, events in dataset.by_user().items():
        if user in splits:
            known = splits[user].sessions[: -2 if stage == "valid" else -1]
        else:
            known = [s.interactions for s in sessionize(events, timedelta(minutes=gap_minutes))]
        if len(known) >= 2:
            sessions[user] = known
        else:
            single += [e for s in known for e in s]
    return sessions, single


def session_cut(
    sessions: Mapping[str, list[list[Interaction]]], single: Sequence[Interaction], back: int
) -> tuple[Cases, list[Interaction]]:
    """The examples ``back`` sessions before each user's latest known one (its new items given everything
    before it), and the log of every user's events before their own cut."""
    cases: Cases = {}
    log = list(single)
    for user, known in sessions.items():
        at = len(known) - 1 - back
        before = [e for s in known[: max(at, 0)] for e in s]
        log += before
        if at >= 1:
            seen = {e.item for e in before}
            new = [e.item for e in known[at] if e.item not in seen]
            if new:
                cases[user] = (before, Target.session(known[at][0].timestamp, new))
    return cases, log


async def learned_rankings(
    settings: Settings,
    dataset: Dataset,
    index: ItemIndex,
    splits: Mapping[str, SessionSplit],
    cases: Mapping[str, Case],
    log: Sequence[Interaction],
    stage: str,
    gap_minutes: float,
) -> tuple[dict[str, list[str]], dict[str, object]]:
    """The learned stage trained on sessions before ``stage``'s target, ranking each user's pool."""
    started = time.perf_counter()
    sessions, single = sessions_known(dataset, splits, stage, gap_minutes)
    cuts = (session_cut(sessions, single, back) for back in range(LEARNED_CUTS))
    examples = await examples_at(settings.retrieval, index, dataset.items, cuts, stages=LEARNED_CUTS, pool=POOL)
    catalog = catalog_fingerprint(dataset.items)
    model = await asyncio.to_thread(
        LearnedRanker.train, examples.older, catalog, stop_groups=examples.latest, pool=POOL, stages=LEARNED_CUTS
    )
    targets = {u: (c.history, Target.session(c.now, c.targets)) for u, c in cases.items()}
    pool = await build_pool(settings.retrieval, index, dataset.items, log, targets, POOL)
    ranked = pool.ranked(model, K)
    card = model.card
    info = {
        "examples": len(examples),
        "pool_recall@100": round(pool.recall(), 4),
        "valid_ndcg@10 (stopping set)": card.valid_ndcg10,
        "params": card.params,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return ranked, info
