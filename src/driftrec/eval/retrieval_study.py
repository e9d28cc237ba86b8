"""How often does the candidate stage contain the user's next item?

Leave-one-out by time on a dataset: for every user, the history is everything before their last
interaction, the target is the last one. Sources are fitted on all users' histories (no test item),
popularity only counts what happened before the target's timestamp. Reports hit rate of the target in
the top-20 and top-50 candidates of each source alone and of the fused list.
"""

from __future__ import annotations

import asyncio
import itertools
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.protocols import first_users, leave_one_out, training_log
from driftrec.eval.report import write_report as report_files
from driftrec.retrieval import CandidateGenerator, ItemIndex, RetrievalRequest
from driftrec.retrieval.fusion import rrf
from driftrec.retrieval.store import ensure_items, open_item_index

CUTOFFS = (20, 50)
POOL = 100  # each source's list length that fusion draws from


@dataclass
class RetrievalStudy:
    dataset: str
    embedder: str
    users: int
    hits: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: float = 0.0
    ingest_seconds: float = 0.0
    settings: dict[str, object] = field(default_factory=dict)

    def rate(self, system: str, k: int) -> float:
        return self.hits[system][k] / self.users if self.users else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "embedder": self.embedder,
            "users": self.users,
            "hit_rate": {s: {f"@{k}": round(self.rate(s, k), 4) for k in CUTOFFS} for s in self.hits},
            "seconds": round(self.seconds, 1),
            "ingest_seconds": round(self.ingest_seconds, 1),
            "machine": f"{platform.machine()} {platform.python_version()}",
            "settings": self.settings,
        }

    def markdown(self) -> str:
        lines = ["| candidates | hit@20 | hit@50 |", "|---|---|---|"]
        for system in self.hits:
            lines.append(f"| {system} | {self.rate(system, 20):.3f} | {self.rate(system, 50):.3f} |")
        return "\n".join(lines)


async def ingest(settings: Settings, dataset: Dataset, backend: str | None = None) -> ItemIndex:
    """Embed the dataset's items into their own Chroma collection (idempotent)."""
    index = await open_item_index(settings, f"items-{dataset.name}", backend)
    await ensure_items(index, dataset.items, Counter(e.item for e in dataset.interactions))
    return index


WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0)


def _hits(lists: dict[str, dict[str, list[str]]], targets: dict[str, str], system: str, k: int) -> int:
    return sum(targets[u] in lists[u][system][:k] for u in lists)


def _fused(per_user: dict[str, list[str]], rrf_k: int, weights: dict[str, float] | None) -> list[str]:
    return [i for i, _ in rrf({s: per_user[s] for s in SOURCE_NAMES}, k=rrf_k, weights=weights)]


SOURCE_NAMES = ("vector", "cooc", "transition", "popularity")


def weight_grid(
    lists: dict[str, dict[str, list[str]]], targets: dict[str, str], rrf_k: int
) -> list[tuple[dict[str, float], float, float]]:
    """Every (vector, transition, popularity) weight triple with co-occurrence fixed at 1:
    (weights, hit@20, hit@50)."""
    rows = []
    for wv, wt, wp in itertools.product(WEIGHT_GRID, repeat=3):
        weights = {"vector": wv, "cooc": 1.0, "transition": wt, "popularity": wp}
        h20 = h50 = 0
        for user, per_user in lists.items():
            fused = _fused(per_user, rrf_k, weights)
            h20 += targets[user] in fused[:20]
            h50 += targets[user] in fused[:50]
        rows.append((weights, h20 / len(lists), h50 / len(lists)))
    return rows


def tune_weights(grid: list[tuple[dict[str, float], float, float]]) -> dict[str, float]:
    """The weights with the best mean of hit@20 and hit@50 (first found wins ties: smaller weights)."""
    return max(grid, key=lambda row: row[1] + row[2])[0]


async def _stage_lists(
    settings: Settings,
    dataset: Dataset,
    index: ItemIndex,
    splits: dict,
    users: list[str],
    stage: str,
    alphas: tuple[float, ...],
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, dict[str, list[str]]], CandidateGenerator]:
    """Every user's per-source top-POOL for one stage, with sources fitted on that stage's training log."""
    log = training_log(splits, stage)
    generator = await asyncio.to_thread(CandidateGenerator.build, settings.retrieval, index, dataset.items, log)
    semaphore = asyncio.Semaphore(8)
    out: dict[str, dict[str, list[str]]] = {}

    async def one(user: str) -> None:
        split = splits[user]
        request = RetrievalRequest(user=user, history=split.seen_before(stage), now=split.target(stage).timestamp)
        async with semaphore:
            lists = await generator.per_source(request, POOL)
            for alpha in alphas:
                lists[f"vector alpha={alpha}"] = await generator.vector.candidates(request, max(CUTOFFS), alpha)
        out[user] = {s: [i for i, _ in hits] for s, hits in lists.items()}
        if progress:
            progress(len(out), len(users))

    await asyncio.gather(*(one(u) for u in users))
    return out, generator


async def run_retrieval_study(
    settings: Settings,
    dataset: Dataset,
    *,
    users: int | None = None,
    backend: str | None = None,
    alphas: tuple[float, ...] = (),
    progress: Callable[[int, int], None] | None = None,
) -> RetrievalStudy:
    started = time.perf_counter()
    index = await ingest(settings, dataset, backend)
    ingest_seconds = time.perf_counter() - started
    splits = leave_one_out(dataset)
    chosen = first_users(splits, users)

    valid_lists, _ = await _stage_lists(settings, dataset, index, splits, chosen, "valid", (), progress)
    grid = weight_grid(valid_lists, {u: splits[u].valid.item for u in chosen}, settings.retrieval.rrf_k)
    weights = tune_weights(grid)
    test_lists, generator = await _stage_lists(settings, dataset, index, splits, chosen, "test", alphas, progress)
    targets = {u: splits[u].test.item for u in chosen}
    for user, per_user in test_lists.items():
        per_user["fused (equal-weight RRF)"] = _fused(per_user, generator.rrf_k, None)
        per_user["fused (weights tuned on validation)"] = _fused(per_user, generator.rrf_k, weights)
        per_user["fused (configured weights)"] = _fused(
            per_user,
            generator.rrf_k,
            generator.weights_for(RetrievalRequest(user=user, history=[], now=splits[user].test.timestamp)),
        )

    systems = [
        "vector",
        "cooc",
        "transition",
        "popularity",
        "fused (equal-weight RRF)",
        "fused (weights tuned on validation)",
        "fused (configured weights)",
    ]
    systems += [f"vector alpha={a}" for a in alphas]
    study = RetrievalStudy(
        dataset.name,
        index.embedder.name,
        len(chosen),
        {s: {k: _hits(test_lists, targets, s, k) for k in CUTOFFS} for s in systems},
        settings={
            "alpha": settings.retrieval.alpha,
            "rrf_k": settings.retrieval.rrf_k,
            "pool": POOL,
            "cooc_window": settings.retrieval.cooc_window,
            "popularity_days": settings.retrieval.popularity_days,
            "tuned_weights": weights,
            "validation_grid": [{"weights": w, "hit@20": round(a, 4), "hit@50": round(b, 4)} for w, a, b in grid],
        },
    )
    study.seconds = time.perf_counter() - started
    study.ingest_seconds = ingest_seconds
    return study


def write_study(study: RetrievalStudy, out_dir: Path) -> Path:
    """retrieval.json and retrieval.md (``eval.report``) and a recall chart."""
    from driftrec.plots import metric_bars, wilson

    path = report_files(out_dir, "retrieval", study)

    k = max(CUTOFFS)
    metric_bars(
        [(s, study.rate(s, k), wilson(study.hits[s][k], study.users)) for s in study.hits],
        out_dir / "retrieval.png",
        f"{study.dataset}, {study.users} users, embedder {study.embedder}",
        label=f"hit rate of the held-out item in the top {k} candidates (95 % Wilson interval)",
    )
    return path
