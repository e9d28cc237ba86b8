"""Run rankers on one protocol stage and report metrics: the harness's core loop.

Every system sees the same split: it is fitted on the stage's training log and ranks the full catalog
minus the user's seen items (the "full ranking" candidate setting); driftrec's retrieval ranker ranks its
fused candidate list. Results: ranx accuracy metrics, 95 % bootstrap intervals, coverage, intra-list
diversity, popularity bias, and a paired t-test of the best system against the best baseline.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.baselines import BASELINES, Ranker, TrainData
from driftrec.eval.metrics import (
    CUTOFFS,
    DEFAULT_METRICS,
    accuracy,
    bootstrap_ci,
    coverage,
    intra_list_diversity,
    per_user,
    popularity_bias,
    significance,
)
from driftrec.eval.protocols import first_users, leave_one_out, training_log
from driftrec.eval.retrieval_study import ingest
from driftrec.retrieval import CandidateGenerator, RetrievalRequest

K = max(CUTOFFS)
HEADLINE = ("ndcg@10", "hit_rate@10", "hit_rate@20", "mrr@10")
DRIFTREC_SYSTEMS = ("driftrec-retrieval",)


@dataclass
class SystemResult:
    name: str
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    beyond: dict[str, float]
    fit_seconds: float
    rank_seconds: float


@dataclass
class Report:
    dataset: str
    stage: str
    users: int
    systems: list[SystemResult] = field(default_factory=list)
    significance: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "stage": self.stage,
            "users": self.users,
            "seconds": round(self.seconds, 1),
            "machine": f"{platform.machine()} python {platform.python_version()}",
            "protocol": "leave-one-out by time, full ranking over unseen items",
            "systems": [
                {
                    "name": s.name,
                    "metrics": {k: round(v, 4) for k, v in s.metrics.items()},
                    "ci95": {k: [round(a, 4), round(b, 4)] for k, (a, b) in s.intervals.items()},
                    "beyond": {k: round(v, 4) for k, v in s.beyond.items()},
                    "fit_seconds": round(s.fit_seconds, 1),
                    "rank_seconds": round(s.rank_seconds, 1),
                }
                for s in self.systems
            ],
            "significance": self.significance,
        }

    def markdown(self) -> str:
        head = "| system | " + " | ".join(HEADLINE) + " | coverage@10 | ILD@10 | pop-bias@10 | fit s |"
        lines = [head, "|" + "---|" * (len(HEADLINE) + 5)]
        for s in self.systems:
            cells = []
            for m in HEADLINE:
                lo, hi = s.intervals.get(m, (s.metrics[m], s.metrics[m]))
                cells.append(f"{s.metrics[m]:.4f} [{lo:.3f}, {hi:.3f}]" if m in s.intervals else f"{s.metrics[m]:.4f}")
            lines.append(
                f"| {s.name} | " + " | ".join(cells) + f" | {s.beyond['coverage@10']:.3f} | "
                f"{s.beyond['ild@10']:.3f} | {s.beyond['popularity_bias@10']:.2f} | {s.fit_seconds:.1f} |"
            )
        return "\n".join(lines)


async def _driftrec_retrieval(
    settings: Settings, dataset: Dataset, log: list, splits: dict, users: list[str], stage: str
) -> tuple[dict[str, list[str]], float]:
    """driftrec with no LLM: the fused candidate list, in fusion order."""
    started = time.perf_counter()
    index = await ingest(settings, dataset)
    generator = await asyncio.to_thread(CandidateGenerator.build, settings, index, dataset.items, log)
    fit_seconds = time.perf_counter() - started
    semaphore = asyncio.Semaphore(8)

    async def one(user: str) -> tuple[str, list[str]]:
        split = splits[user]
        request = RetrievalRequest(user=user, history=split.seen_before(stage), now=split.target(stage).timestamp)
        async with semaphore:
            candidates = await generator.generate(request, K)
        return user, [c.item.id for c in candidates]

    return dict(await asyncio.gather(*(one(u) for u in users))), fit_seconds


def train_data(dataset: Dataset, splits: dict, stage: str) -> TrainData:
    """What a baseline is fitted on: ``stage``'s training log, per user in time order."""
    sequences: dict[str, list] = {}
    for event in training_log(splits, stage):
        sequences.setdefault(event.user, []).append(event)
    return TrainData(list(dataset.items), sequences)


def rank_with(ranker: Ranker, data: TrainData, splits: dict, users: Sequence[str], stage: str) -> dict[str, list[str]]:
    """A fitted baseline ranking the full catalog minus each user's seen items."""
    return {u: ranker.recommend(u, [e.item for e in splits[u].seen_before(stage)], K, data.catalog) for u in users}


async def run_offline(
    settings: Settings,
    dataset: Dataset,
    systems: Sequence[str],
    *,
    stage: str = "test",
    users: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    started = time.perf_counter()
    splits = leave_one_out(dataset)
    chosen = first_users(splits, users)
    log = training_log(splits, stage)
    data = train_data(dataset, splits, stage)
    targets = {u: splits[u].target(stage).item for u in chosen}
    popularity = Counter(e.item for e in log)
    genres = {i: item.genres for i, item in dataset.items.items()}

    report = Report(dataset.name, stage, len(chosen))
    rankings: dict[str, dict[str, list[str]]] = {}
    for name in systems:
        if progress:
            progress(name)
        t0 = time.perf_counter()
        if name in DRIFTREC_SYSTEMS:
            ranked, fit_seconds = await _driftrec_retrieval(settings, dataset, log, splits, chosen, stage)
        elif name in BASELINES:
            ranker = await asyncio.to_thread(BASELINES[name]().fit, data)
            fit_seconds = time.perf_counter() - t0
            ranked = await asyncio.to_thread(rank_with, ranker, data, splits, chosen, stage)
        else:
            raise ValueError(f"unknown system {name!r}; known: {[*BASELINES, *DRIFTREC_SYSTEMS]}")
        rank_seconds = time.perf_counter() - t0 - fit_seconds
        rankings[name] = ranked
        metrics = accuracy(targets, ranked, DEFAULT_METRICS)
        intervals = {m: bootstrap_ci(per_user(targets, ranked, m)) for m in ("ndcg@10", "hit_rate@10")}
        beyond = {
            "coverage@10": coverage(ranked, len(dataset.items)),
            "ild@10": intra_list_diversity(ranked, genres),
            "popularity_bias@10": popularity_bias(ranked, popularity),
        }
        report.systems.append(SystemResult(name, metrics, intervals, beyond, fit_seconds, rank_seconds))

    baselines = [s for s in report.systems if s.name in BASELINES and s.name != "random"]
    ours = [s for s in report.systems if s.name in DRIFTREC_SYSTEMS]
    if baselines and ours:
        best_baseline = max(baselines, key=lambda s: s.metrics["ndcg@10"])
        best_ours = max(ours, key=lambda s: s.metrics["ndcg@10"])
        pairs = significance(
            targets,
            {best_ours.name: rankings[best_ours.name], best_baseline.name: rankings[best_baseline.name]},
            "ndcg@10",
        )
        report.significance = {
            "metric": "ndcg@10",
            "test": "paired Student's t (ranx)",
            "ours": best_ours.name,
            "baseline": best_baseline.name,
            "p_value": pairs[best_ours.name][best_baseline.name],
            "difference": round(best_ours.metrics["ndcg@10"] - best_baseline.metrics["ndcg@10"], 4),
        }
    report.seconds = time.perf_counter() - started
    return report


def write_report(report: Report, out_dir: Path, name: str = "offline") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(report.as_dict(), indent=2))
    (out_dir / f"{name}.md").write_text(report.markdown() + "\n")
    from driftrec.plots import metric_bars

    metric_bars(
        [(s.name, s.metrics["ndcg@10"], s.intervals["ndcg@10"]) for s in report.systems],
        out_dir / f"{name}.png",
        f"{report.dataset}, {report.stage}, {report.users} users: NDCG@10 with 95 % intervals",
    )
    return path
