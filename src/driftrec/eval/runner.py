"""Run rankers on one protocol stage and report metrics: the harness's core loop.

Every system (``eval.systems``: the baselines and driftrec's variants, each one registered class) sees
the same split: it is fitted on the stage's training log and ranks the full catalog minus the user's
seen items (the "full ranking" candidate setting); driftrec's retrieval ranks its fused candidate list,
its learned stage the union of every source's candidates. Results: ranx accuracy metrics, 95 %
bootstrap intervals, coverage, intra-list diversity, popularity bias, and a paired t-test of the best
driftrec system against the best baseline.
"""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
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
from driftrec.eval.protocols import first_users, leave_one_out_cases
from driftrec.eval.report import write_report as report_files
from driftrec.eval.systems import StageData, check_systems, make_system

K = max(CUTOFFS)
HEADLINE = ("ndcg@10", "hit_rate@10", "hit_rate@20", "mrr@10")


@dataclass
class SystemResult:
    name: str
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    beyond: dict[str, float]
    fit_seconds: float
    rank_seconds: float
    training: dict[str, object] | None = None  # what the system's training decided (epochs, a ranker's card)


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


def leave_one_out_stage(settings: Settings, dataset: Dataset, stage: str, users: int | None = None) -> StageData:
    """Leave-one-out ``stage`` for the first ``users`` users (all when None): what every system ranks."""
    cases, log = leave_one_out_cases(dataset, stage)
    chosen = first_users(cases, users)
    return StageData(settings, dataset, log, {u: cases[u] for u in chosen})


async def run_offline(
    settings: Settings,
    dataset: Dataset,
    systems: Sequence[str],
    *,
    stage: str = "test",
    users: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Every named system (``eval.systems``) fitted on the stage's training log, ranking the same users."""
    started = time.perf_counter()
    check_systems(systems)
    data = leave_one_out_stage(settings, dataset, stage, users)
    targets = {u: c.targets for u, c in data.cases.items()}
    popularity = Counter(e.item for e in data.log)
    genres = {i: item.genres for i, item in dataset.items.items()}

    report = Report(dataset.name, stage, len(data.cases))
    rankings: dict[str, dict[str, list[str]]] = {}
    groups: dict[str, str] = {}
    for name in systems:
        if progress:
            progress(name)
        system = make_system(name)
        t0 = time.perf_counter()
        await system.fit(data)
        fit_seconds = time.perf_counter() - t0
        ranked = await system.rank(data, K)
        rank_seconds = time.perf_counter() - t0 - fit_seconds
        rankings[name], groups[name] = ranked, system.group
        metrics = accuracy(targets, ranked, DEFAULT_METRICS)
        intervals = {m: bootstrap_ci(per_user(targets, ranked, m)) for m in ("ndcg@10", "hit_rate@10")}
        beyond = {
            "coverage@10": coverage(ranked, len(dataset.items)),
            "ild@10": intra_list_diversity(ranked, genres),
            "popularity_bias@10": popularity_bias(ranked, popularity),
        }
        report.systems.append(
            SystemResult(name, metrics, intervals, beyond, fit_seconds, rank_seconds, training=system.report())
        )

    baselines = [s for s in report.systems if groups[s.name] == "baseline" and s.name != "random"]
    ours = [s for s in report.systems if groups[s.name] == "driftrec"]
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
    """The shared report files (``eval.report``) and a bar chart of NDCG@10 with intervals."""
    from driftrec.plots import metric_bars

    path = report_files(out_dir, name, report)

    metric_bars(
        [(s.name, s.metrics["ndcg@10"], s.intervals["ndcg@10"]) for s in report.systems],
        out_dir / f"{name}.png",
        f"{report.dataset}, {report.stage}, {report.users} users: NDCG@10 with 95 % intervals",
    )
    return path
