"""Training the learned ranking stage from an event log, the same way for serving and for evaluation.

Each user's sequence gives examples at several cut points: the last event as the target with everything
before it as history, then the one before, ... (``stages``). A target is a set of items: one next item
here, a next session's new items under session replay (``eval.session_study``). For each cut point the candidate sources
and the features are fitted on a log of every user's events before their own cut, so no example knows
its target, nor any later event of anyone's sequence. The candidate pool of an example is built exactly
as serving builds it (``candidate_pool``): every source's top ``pool``, serving's fusion order first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from driftrec.config import RetrievalSettings
from driftrec.models import Candidate, Interaction, Item
from driftrec.ranking.features import FEATURES, SOURCES, FeatureBuilder
from driftrec.ranking.learned import LearnedRanker, catalog_fingerprint
from driftrec.retrieval import CandidateGenerator, RetrievalRequest
from driftrec.retrieval.store import ItemIndex

Group = tuple[np.ndarray, np.ndarray]  # one example: feature rows of its candidates, 1 for a target item


@dataclass(frozen=True)
class Target:
    """What one example should rank first, and the moment the prediction is made."""

    at: datetime
    items: frozenset[str]

    @classmethod
    def next_event(cls, event: Interaction) -> Target:
        return cls(event.timestamp, frozenset({event.item}))

    @classmethod
    def session(cls, at: datetime, items: Collection[str]) -> Target:
        return cls(at, frozenset(items))


Cases = dict[str, tuple[list[Interaction], Target]]


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
            cases[user] = (list(events[:cut]), Target.next_event(events[cut]))
    return cases, log


@dataclass
class Pool:
    """One cut point's examples: per user the candidate ids (pool order), their feature rows, the target
    items; ``source_hits`` sums, per source, the share of each user's target items the source proposed."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)
    source_hits: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def groups(self) -> list[Group]:
        return [
            (self.rows[u], np.array([i in self.targets[u] for i in ids], dtype=np.float32))
            for u, ids in self.ids.items()
        ]

    def ranked(self, model: LearnedRanker, k: int) -> dict[str, list[str]]:
        """Each user's pool ordered by the model's scores (ties keep pool order), the top ``k``."""
        out = {}
        for user, ids in self.ids.items():
            order = np.argsort(-model.scores(self.rows[user]), kind="stable")
            out[user] = [ids[n] for n in order[:k]]
        return out

    def recall(self) -> float:
        """Mean over users of the share of their target items in the pool (for one target: hit or not)."""
        shares = [len(set(self.targets[u]) & set(ids)) / len(self.targets[u]) for u, ids in self.ids.items()]
        return sum(shares) / max(1, len(shares))


async def build_pool(
    retrieval: RetrievalSettings,
    index: ItemIndex,
    catalog: Mapping[str, Item],
    log: Sequence[Interaction],
    cases: Mapping[str, tuple[Sequence[Interaction], Target]],
    pool: int,
    include: Mapping[str, Sequence[str]] | None = None,
) -> Pool:
    """The candidates and feature rows of ``cases``, with sources and features fitted on ``log``.

    ``include``: per user, items to rank as well when no source proposed them (a sampled protocol's
    candidates): they follow the pool with no provenance, as any item beyond the pool would."""
    started = time.perf_counter()
    generator = await asyncio.to_thread(CandidateGenerator.build, retrieval, index, catalog, log)
    builder = await asyncio.to_thread(FeatureBuilder().fit, log, catalog)
    out = Pool(source_hits=dict.fromkeys(SOURCES, 0.0))
    semaphore = asyncio.Semaphore(8)

    async def one(user: str, history: Sequence[Interaction], target: Target) -> None:
        request = RetrievalRequest(user=user, history=history, now=target.at)
        async with semaphore:
            candidates = await candidate_pool(generator, request, pool, builder)
        have = {c.item.id for c in candidates}
        extra = [i for i in (include or {}).get(user, ()) if i not in have and i in catalog]
        candidates += [Candidate(item=catalog[i], score=0.0, provenance=[]) for i in extra]
        out.ids[user] = [c.item.id for c in candidates]
        out.rows[user] = await asyncio.to_thread(builder.features, history, target.at.timestamp(), candidates)
        out.targets[user] = sorted(target.items)
        hits = [c for c in candidates if c.item.id in target.items]
        for source in SOURCES:
            found = sum(any(p.source == source for p in c.provenance) for c in hits)
            out.source_hits[source] += found / len(target.items)

    await asyncio.gather(*(one(u, h, t) for u, (h, t) in cases.items()))
    # the order the requests finished in is the threads' business: examples go in the cases' order, so the
    # ranker's early-stopping split, and so the trained model, are the same on every run
    out.ids = {u: out.ids[u] for u in cases}
    out.rows = {u: out.rows[u] for u in cases}
    out.targets = {u: out.targets[u] for u in cases}
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
    retrieval: RetrievalSettings,
    index: ItemIndex,
    catalog: Mapping[str, Item],
    sequences: Mapping[str, Sequence[Interaction]],
    *,
    stages: int = 5,
    pool: int = 100,
    progress: Callable[[str], None] | None = None,
) -> Examples:
    """The examples of ``stages`` cut points (each user's last event, the one before, ...)."""
    cuts = (cut_points(sequences, back) for back in range(stages))
    return await examples_at(retrieval, index, catalog, cuts, stages=stages, pool=pool, progress=progress)


async def examples_at(
    retrieval: RetrievalSettings,
    index: ItemIndex,
    catalog: Mapping[str, Item],
    cuts: Iterable[tuple[Cases, Sequence[Interaction]]],
    *,
    stages: int,
    pool: int = 100,
    progress: Callable[[str], None] | None = None,
) -> Examples:
    """The examples of each cut point (its cases, and the log its sources and features are fitted on),
    latest first: with more than one, the first decides early stopping and is not trained on."""
    examples = Examples([], [])
    for back, (cases, log) in enumerate(cuts):
        if progress:
            progress(f"training examples: cut point {back + 1} of {stages}")
        if not cases:
            continue
        groups = (await build_pool(retrieval, index, catalog, log, cases, pool)).groups()
        if back == 0 and stages > 1:
            examples.latest = groups
        else:
            examples.older += groups
    return examples


async def train_ranker(
    retrieval: RetrievalSettings,
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
    examples = await training_groups(retrieval, index, catalog, sequences, stages=stages, pool=pool, progress=progress)
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
