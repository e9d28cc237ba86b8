"""Training the learned ranking stage from an event log, the same way for serving and for evaluation.

Each user's sequence gives examples at several cut points: the last event as the target with everything
before it as history, then the one before, ... (``stages``). For each cut point the candidate sources
and the features are fitted on a log of every user's events before their own cut, so no example knows
its target, nor any later event of anyone's sequence. The candidate pool of an example is built exactly
as serving builds it (``candidate_pool``): every source's top ``pool``, serving's fusion order first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from driftrec.config import Settings
from driftrec.models import Candidate, Interaction, Item
from driftrec.ranking.features import FEATURES, SOURCES, FeatureBuilder
from driftrec.ranking.learned import LearnedRanker, catalog_fingerprint
from driftrec.retrieval import CandidateGenerator, RetrievalRequest
from driftrec.retrieval.store import ItemIndex

Cases = dict[str, tuple[list[Interaction], Interaction]]
Group = tuple[np.ndarray, np.ndarray]  # one example: feature rows of its candidates, 1 for the target


async def candidate_pool(
    generator: CandidateGenerator, request: RetrievalRequest, pool: int, models: FeatureBuilder | None = None
) -> list[Candidate]:
    """Every source's top ``pool`` for the learned ranker: serving's fusion order first (its weights),
    then what only a zero-weight source or one of the feature builder's models (ALS, item-KNN) found, so
    the ranker sees every source's picks; each candidate's provenance names every list that had it."""
    lists = await generator.per_source(request, pool)
    weights = generator.weights_for(request) or dict.fromkeys(lists, 1.0)
    if models is not None:
        extra = await asyncio.to_thread(models.source_lists, request, pool, generator.catalog)
        lists |= extra
        weights = weights | dict.fromkeys(extra, 0.0)  # serving's fusion order stays retrieval's alone
    total = sum(len(v) for v in lists.values())
    ordered = generator.fuse(lists, total, weights)
    have = {c.item.id for c in ordered}
    return ordered + [c for c in generator.fuse(lists, total) if c.item.id not in have]


def cut_points(sequences: Mapping[str, Sequence[Interaction]], back: int) -> tuple[Cases, list[Interaction]]:
    """Per user (history, target) with the target ``back`` events before their last, and the log of every
    user's events before their own cut. Users with no history left at that point are left out."""
    cases: Cases = {}
    log: list[Interaction] = []
    for user, events in sequences.items():
        cut = len(events) - 1 - back
        log.extend(events[: max(cut, 0)])
        if cut >= 1:
            cases[user] = (list(events[:cut]), events[cut])
    return cases, log


@dataclass
class Pool:
    """One cut point's examples: per user the candidate ids (pool order), their feature rows, the target."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    source_hits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def groups(self) -> list[Group]:
        return [
            (self.rows[u], np.array([i == self.targets[u] for i in ids], dtype=np.float32))
            for u, ids in self.ids.items()
        ]

    def recall(self) -> float:
        return sum(self.targets[u] in ids for u, ids in self.ids.items()) / max(1, len(self.ids))


async def build_pool(
    settings: Settings,
    index: ItemIndex,
    catalog: Mapping[str, Item],
    log: Sequence[Interaction],
    cases: Mapping[str, tuple[Sequence[Interaction], Interaction]],
    pool: int,
) -> Pool:
    """The candidates and feature rows of ``cases``, with sources and features fitted on ``log``."""
    started = time.perf_counter()
    generator = await asyncio.to_thread(CandidateGenerator.build, settings, index, catalog, log)
    builder = await asyncio.to_thread(FeatureBuilder().fit, log, catalog)
    out = Pool(source_hits=dict.fromkeys(SOURCES, 0))
    semaphore = asyncio.Semaphore(8)

    async def one(user: str, history: Sequence[Interaction], target: Interaction) -> None:
        request = RetrievalRequest(user=user, history=history, now=target.timestamp)
        async with semaphore:
            candidates = await candidate_pool(generator, request, pool, builder)
        out.ids[user] = [c.item.id for c in candidates]
        out.rows[user] = await asyncio.to_thread(builder.features, history, target.timestamp.timestamp(), candidates)
        out.targets[user] = target.item
        found = {p.source for c in candidates if c.item.id == target.item for p in c.provenance}
        for source in found:
            out.source_hits[source] += 1

    await asyncio.gather(*(one(u, h, t) for u, (h, t) in cases.items()))
    # the order the requests finished in is the threads' business: examples go in the cases' order, so the
    # ranker's early-stopping split, and so the trained model, are the same on every run
    out.ids = {u: out.ids[u] for u in cases}
    out.rows = {u: out.rows[u] for u in cases}
    out.seconds = time.perf_counter() - started
    return out


@dataclass
class Examples:
    """Training examples: ``older`` cut points to learn from, the ``latest`` (each user's last event) to
    decide when to stop and which setting to keep — the latest is the closest to what serving predicts."""

    older: list[Group]
    latest: list[Group]

    def __len__(self) -> int:
        return len(self.older) + len(self.latest)


async def training_groups(
    settings: Settings,
    index: ItemIndex,
    catalog: Mapping[str, Item],
    sequences: Mapping[str, Sequence[Interaction]],
    *,
    stages: int = 5,
    pool: int = 100,
    progress: Callable[[str], None] | None = None,
) -> Examples:
    """The examples of ``stages`` cut points (each user's last event, the one before, ...)."""
    examples = Examples([], [])
    for back in range(stages):
        if progress:
            progress(f"training examples: cut point {back + 1} of {stages}")
        cases, log = cut_points(sequences, back)
        groups = (await build_pool(settings, index, catalog, log, cases, pool)).groups()
        if back == 0 and stages > 1:
            examples.latest = groups
        else:
            examples.older += groups
    return examples


async def train_ranker(
    settings: Settings,
    index: ItemIndex,
    catalog: Mapping[str, Item],
    sequences: Mapping[str, Sequence[Interaction]],
    *,
    stages: int = 5,
    pool: int = 100,
    features: Sequence[str] = FEATURES,
    progress: Callable[[str], None] | None = None,
) -> LearnedRanker:
    """A ranker trained on ``sequences`` (user -> events, oldest first)."""
    examples = await training_groups(settings, index, catalog, sequences, stages=stages, pool=pool, progress=progress)
    if progress:
        progress(f"training LambdaMART on {len(examples)} examples")
    return await asyncio.to_thread(
        LearnedRanker.train,
        examples.older,
        catalog_fingerprint(catalog),
        stop_groups=examples.latest or None,
        features=features,
        pool=pool,
        stages=stages,
    )
