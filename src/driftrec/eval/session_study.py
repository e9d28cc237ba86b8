"""Session replay: does an evolving long-term profile plus a short-term session beat either one alone?

Protocol (``eval.protocols.session_replay``): each user's events are cut into sessions (a day of
inactivity by default); the last session is the test target, the one before it the validation target.
The system has observed every earlier session in time order, as production would have: memory replays
the last ``profile_sessions`` of them through the LLM (session summaries, profile updates), the
candidate sources are fitted on everything before the target session. Every system ranks 20 items and
is scored against the target session's new items (ranx; several relevant items per user).

Rankers in one run, on the same users:
- baselines: random, most-popular, item-KNN, BPR (SASRec on request; it trains for ~20 min), test
  stage only, with their own hyper-parameters (validation chooses driftrec's knobs, not theirs);
- driftrec without an LLM: co-occurrence, transitions, popularity, vector retrieval, fused retrieval, and
  the learned ranking stage (LambdaMART over the candidate pool, trained on earlier sessions: each
  training example is a session's new items given everything before it);
- the alpha sweep, u_f = alpha * u_s + (1 - alpha) * u_l, with u_l from the history (no LLM), from the
  evolving LLM profile, or from the static one (its first version, never updated); alpha is chosen on
  validation per u_l;
- with an LLM: the verbalizer over retrieval's top 20 with each context (full, no-profile, no-session,
  static-profile, raw-history), alone and fused with retrieval at the weight chosen on validation,
  and the listwise ranker with the full context.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.llm_study import (
    WEIGHTS,
    Record,
    UserMemory,
    build_profiles,
    collect,
    label,
    score,
)
from driftrec.eval.metrics import (
    DEFAULT_METRICS,
    accuracy,
    bootstrap_ci,
    coverage,
    intra_list_diversity,
    per_user,
    popularity_bias,
    significance,
)
from driftrec.eval.protocols import Case, SessionSplit, first_users, session_replay, session_training_log
from driftrec.eval.report import write_report as report_files
from driftrec.eval.retrieval_study import ingest
from driftrec.eval.session_learned import LEARNED, learned_rankings
from driftrec.eval.systems import StageData, make_system
from driftrec.llm import LLM
from driftrec.ranking import RankErrors
from driftrec.retrieval import CandidateGenerator, ItemIndex, RetrievalRequest
from driftrec.retrieval.fusion import rrf

K = 20
FUSED = "fused retrieval (configured weights)"
TUNED = "fused retrieval (weights tuned on validation)"
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
BASELINE_SYSTEMS = ("random", "most-popular", "item-knn", "bpr")
LLM_CONTEXTS = ("full", "no-profile", "no-session", "static-profile", "raw-history")
LONG_TERM = ("history", "evolving profile", "static profile")
COLUMNS = ("ndcg@10", "recall@10", "recall@20", "hit_rate@10", "mrr@10", "precision@10", "map@20")


@dataclass
class SystemScore:
    name: str
    group: str  # baseline | retrieval | ranking | alpha | llm
    metrics: dict[str, float]
    ci: tuple[float, float]  # 95 % bootstrap interval of NDCG@10
    beyond: dict[str, float] = field(default_factory=dict)  # coverage, diversity, popularity bias at 10


@dataclass
class SessionStudy:
    dataset: str
    stage: str
    gap_minutes: float
    users: int
    model: str | None
    systems: list[SystemScore] = field(default_factory=list)
    alpha_sweep: dict[str, dict[str, float]] = field(default_factory=dict)  # u_l -> {alpha: ndcg@10}
    chosen: dict[str, float] = field(default_factory=dict)  # alpha per u_l, llm weight
    significance: list[dict[str, object]] = field(default_factory=list)
    cost: dict[str, dict[str, float]] = field(default_factory=dict)  # llm ranker -> tokens, latency
    errors: dict[str, float] = field(default_factory=dict)
    learned: dict[str, object] = field(default_factory=dict)  # the learned stage's training, when run
    profile_sessions: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["machine"] = f"{platform.machine()} python {platform.python_version()}"
        data["protocol"] = f"session replay (gap {self.gap_minutes:g} min), predict the next session's new items"
        return data

    def markdown(self) -> str:
        lines = [
            f"Session replay, {self.stage} stage, {self.users} users, gap {self.gap_minutes:g} min, "
            f"model {self.model or '(none)'}, profiles from the last {self.profile_sessions} sessions",
            "",
            "| system | " + " | ".join(COLUMNS) + " | coverage@10 | ILD@10 | pop-bias@10 |",
            "|---|" + "---|" * (len(COLUMNS) + 3),
        ]
        for s in self.systems:
            cells = [
                f"{s.metrics[m]:.4f}" + (f" [{s.ci[0]:.3f}, {s.ci[1]:.3f}]" if m == "ndcg@10" else "") for m in COLUMNS
            ]
            cells += [f"{s.beyond.get(k, 0.0):.3f}" for k in ("coverage@10", "ild@10", "popularity_bias@10")]
            lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
        if self.alpha_sweep:
            alphas = list(next(iter(self.alpha_sweep.values())))
            lines += ["", "NDCG@10 by alpha (u_f = alpha·u_s + (1 - alpha)·u_l):", ""]
            lines += ["| u_l from | " + " | ".join(f"α={a}" for a in alphas) + " |", "|---|" + "---|" * len(alphas)]
            for source, row in self.alpha_sweep.items():
                lines.append(f"| {source} | " + " | ".join(f"{row[a]:.4f}" for a in alphas) + " |")
        if self.learned:
            lines += ["", "Learned stage: " + ", ".join(f"{k} {v}" for k, v in self.learned.items())]
        if self.cost:
            lines += [
                "",
                "| LLM ranker | prompt tokens | completion tokens | server s (uncached mean) |",
                "|---|---|---|---|",
            ]
            for name, cost in self.cost.items():
                tokens = f"{cost['prompt_tokens']:.0f} | {cost['completion_tokens']:.1f}"
                lines.append(f"| {name} | {tokens} | {cost['latency_s']:.2f} |")
        for test in self.significance:
            p = "n/a (identical per-user values)" if test["p_value"] is None else f"{test['p_value']:.3g}"
            lines.append(
                f"\n{test['a']} vs {test['b']}: NDCG@10 difference {test['difference']:+.4f}, p = {p} (paired t)"
            )
        return "\n".join(lines)


def _case(split: SessionSplit, stage: str) -> Case:
    return Case(split.seen_before(stage), split.targets(stage), split.target(stage).timestamp)


async def _retrieval_rankings(
    generator: CandidateGenerator,
    cases: Mapping[str, Case],
    alphas: Sequence[float],
    memories: Mapping[str, UserMemory] | None,
) -> dict[str, dict[str, list[str]]]:
    """Each retrieval system's top K per user: the sources alone and the alpha sweep per u_l."""
    semaphore = asyncio.Semaphore(8)
    out: dict[str, dict[str, list[str]]] = {}

    async def one(user: str) -> None:
        case = cases[user]
        request = RetrievalRequest(user=user, history=case.history, now=case.now)
        async with semaphore:
            lists = await generator.per_source(request, K, sources=("cooc", "transition", "popularity"))
            known = (memories or {}).get(user)
            vectors = {"history": None}
            if known is not None:
                vectors |= {"evolving profile": known.evolving_vector, "static profile": known.static_vector}
            for source, vector in vectors.items():
                # No profile yet (the replay's updates failed): u_l falls back to the history, as in production.
                own = RetrievalRequest(user=user, history=case.history, now=case.now, profile_vector=vector)
                for alpha in alphas:
                    lists[f"vector α={alpha:g} (u_l: {source})"] = await generator.vector.candidates(own, K, alpha)
        for name, hits in lists.items():
            out.setdefault(name, {})[user] = [i for i, _ in hits]

    await asyncio.gather(*(one(u) for u in cases))
    return out


POOL = 100  # each source's list length that fusion draws from
FUSION_GRID = {
    "vector": (0.0, 0.25),
    "cooc": (0.0, 0.25, 0.5, 1.0),
    "transition": (0.0, 0.25, 0.5, 1.0),
    "popularity": (0.0, 0.25, 0.5, 1.0),
}


async def _tune_fusion(
    generator: CandidateGenerator, cases: Mapping[str, Case], targets: Mapping[str, list[str]]
) -> dict[str, float]:
    """Source weights with the best NDCG@10 on these (validation) cases, by grid search over RRF weights.

    The configured weights were tuned for leave-one-out; the next session is a different question
    (which items a user reaches for on a new day), so the harness tunes them for the protocol it runs.
    """
    semaphore = asyncio.Semaphore(8)

    async def pools(user: str) -> tuple[str, dict[str, list[str]]]:
        case = cases[user]
        async with semaphore:
            lists = await generator.per_source(RetrievalRequest(user=user, history=case.history, now=case.now), POOL)
        return user, {source: [i for i, _ in hits] for source, hits in lists.items()}

    per_user = dict(await asyncio.gather(*(pools(u) for u in cases)))
    best: tuple[float, dict[str, float]] = (-1.0, {})
    for values in itertools.product(*FUSION_GRID.values()):
        weights = dict(zip(FUSION_GRID, values, strict=True))
        if not any(weights.values()):
            continue
        ranked = {
            u: [i for i, _ in rrf(lists, k=generator.rrf_k, weights=weights)][:K] for u, lists in per_user.items()
        }
        value = accuracy(targets, ranked, ["ndcg@10"])["ndcg@10"]
        if value > best[0] + 1e-12:  # ties keep the earlier (smaller) weights
            best = (value, weights)
    return best[1]


async def _baseline_rankings(
    settings: Settings,
    dataset: Dataset,
    index: ItemIndex,
    log: Sequence,
    cases: Mapping[str, Case],
    names: Sequence[str],
) -> dict[str, dict[str, list[str]]]:
    """Each named system (``eval.systems``) fitted on the stage's log, ranking these users."""
    stage = StageData(settings, dataset, log, cases, index=index)
    out = {}
    for name in names:
        system = make_system(name)
        await system.fit(stage)
        out[name] = await system.rank(stage, K)
    return out


def _cost(records: Sequence[Record]) -> dict[str, float]:
    fresh = [r.seconds for r in records if not r.cached]
    return {
        "prompt_tokens": statistics.mean(r.prompt_tokens for r in records),
        "completion_tokens": statistics.mean(r.completion_tokens for r in records),
        "latency_s": statistics.mean(fresh) if fresh else 0.0,
        "degraded": float(sum(r.degraded for r in records)),
    }


async def _stage(
    settings: Settings,
    dataset: Dataset,
    llm: LLM | None,
    index: ItemIndex,
    stage: str,
    splits: Mapping[str, SessionSplit],
    users: Sequence[str],
    *,
    gap_minutes: float,
    baselines: Sequence[str],
    alphas: Sequence[float],
    profile_sessions: int,
    contexts: Sequence[str],
    listwise: bool,
    fusion: dict[str, float] | None,
    learned: dict[str, object] | None,
    out_dir: Path,
    resume: bool,
    progress: Callable[[str], None] | None,
) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[Record]], Scorer, dict[str, float]]:
    """Every system's rankings for one stage (plus the LLM records, for weights and costs).

    ``fusion``: retrieval weights chosen on validation; None (the validation stage) tunes them here.
    The LLM ranks the candidates of the tuned fusion, i.e. the best retrieval the protocol allows.
    ``learned``: when given, the learned stage is trained for this stage and its training noted there.
    """
    cases = {u: _case(splits[u], stage) for u in users}
    targets = {u: c.targets for u, c in cases.items()}
    log = session_training_log(dataset, splits, stage)
    rankings: dict[str, dict[str, list[str]]] = {}
    if stage == "test":  # baselines keep their own hyper-parameters: validation has nothing to choose for them
        if progress:
            progress(f"{stage}: baselines")
        rankings = await _baseline_rankings(settings, dataset, index, log, cases, baselines)
    generator = await asyncio.to_thread(CandidateGenerator.build, settings.retrieval, index, dataset.items, log)
    memories = None
    if llm is not None and profile_sessions:
        if progress:
            progress(f"{stage}: replaying sessions through memory")
        memories = await build_profiles(
            settings,
            dataset,
            llm,
            users,
            stage,
            sessions=profile_sessions,
            gap_minutes=gap_minutes,
            histories={u: c.history for u, c in cases.items()},
            tag="sessions",
        )
    if progress:
        progress(f"{stage}: retrieval")
    rankings |= await _retrieval_rankings(generator, cases, alphas, memories)
    rankings[FUSED] = await _fused(generator, cases)
    if fusion is None:
        fusion = await _tune_fusion(generator, cases, targets)
    generator.fusion, generator.weights = "weighted", dict(fusion)
    rankings[TUNED] = await _fused(generator, cases)
    if learned is not None:
        if progress:
            progress(f"{stage}: learned ranking stage (training on earlier sessions)")
        rankings[LEARNED], info = await learned_rankings(
            settings, dataset, index, splits, cases, log, stage, gap_minutes
        )
        learned |= info
    records: dict[str, list[Record]] = {}
    if llm is not None:
        runs = [("verbalizer", c) for c in contexts] + ([("listwise", "full")] if listwise else [])
        for mode, context in runs:
            if progress:
                progress(f"{stage}: LLM {mode}, context {context}")
            records[f"{mode}, {context}"] = await collect(
                settings,
                dataset,
                llm,
                stage=stage,
                users=users,
                mode=mode,
                context=context,
                memories=memories,
                cases=cases,
                generator=generator,
                out=out_dir / f"sessions-{mode}-{context}-{stage}.jsonl",
                resume=resume,
            )
    genres = {i: item.genres for i, item in dataset.items.items()}
    scorer = Scorer(targets, len(dataset.items), genres, Counter(e.item for e in log))
    return rankings, records, scorer, fusion


async def _fused(generator: CandidateGenerator, cases: Mapping[str, Case]) -> dict[str, list[str]]:
    """The fused top K per user with the generator's current fusion weights."""

    async def one(user: str) -> tuple[str, list[str]]:
        request = RetrievalRequest(user=user, history=cases[user].history, now=cases[user].now)
        return user, [c.item.id for c in await generator.generate(request, K)]

    return dict(await asyncio.gather(*(one(u) for u in cases)))


@dataclass
class Scorer:
    """Scores rankings against one stage's targets, with the beyond-accuracy measures of the catalog."""

    targets: Mapping[str, list[str]]
    catalog_size: int
    genres: Mapping[str, Sequence[str]]
    popularity: Mapping[str, int]

    def __call__(self, name: str, group: str, ranked: Mapping[str, list[str]]) -> SystemScore:
        return SystemScore(
            name,
            group,
            accuracy(self.targets, ranked, DEFAULT_METRICS),
            bootstrap_ci(per_user(self.targets, ranked, "ndcg@10")),
            {
                "coverage@10": coverage(ranked, self.catalog_size),
                "ild@10": intra_list_diversity(ranked, self.genres),
                "popularity_bias@10": popularity_bias(ranked, self.popularity),
            },
        )


def _paired(
    targets: Mapping[str, list[str]], rankings: Mapping[str, Mapping[str, list[str]]], a: str, b: str
) -> dict[str, object]:
    p = significance(targets, {a: rankings[a], b: rankings[b]}, "ndcg@10")[a][b]
    diff = (
        accuracy(targets, rankings[a], ["ndcg@10"])["ndcg@10"] - accuracy(targets, rankings[b], ["ndcg@10"])["ndcg@10"]
    )
    # identical per-user values (e.g. two variants that rank alike) give no test statistic
    return {
        "a": a,
        "b": b,
        "metric": "ndcg@10",
        "p_value": p if math.isfinite(p) else None,
        "difference": round(diff, 4),
    }


async def run_session_study(
    settings: Settings,
    dataset: Dataset,
    llm: LLM | None,
    *,
    users: int | None = None,
    gap_minutes: float = 1440.0,
    baselines: Sequence[str] = BASELINE_SYSTEMS,
    alphas: Sequence[float] = ALPHAS,
    profile_sessions: int = 2,
    contexts: Sequence[str] = LLM_CONTEXTS,
    listwise: bool = True,
    learned: bool = True,
    out_dir: Path,
    resume: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, SessionStudy]:
    """Validation (choose alpha per u_l and the LLM weight) then test (apply them); writes the report."""
    started = time.perf_counter()
    splits = session_replay(dataset, gap_minutes=gap_minutes)
    chosen = first_users(splits, users)
    model = llm.client.model if llm is not None else None
    studies: dict[str, SessionStudy] = {}
    picks: dict[str, float] = {}
    fusion: dict[str, float] | None = None
    index = await ingest(settings, dataset)  # once: both stages rank the same catalog
    for stage in ("valid", "test"):
        training: dict[str, object] | None = {} if learned else None
        rankings, records, scorer, fusion = await _stage(
            settings,
            dataset,
            llm,
            index,
            stage,
            splits,
            chosen,
            gap_minutes=gap_minutes,
            baselines=baselines,
            alphas=alphas,
            profile_sessions=profile_sessions,
            contexts=contexts,
            listwise=listwise,
            fusion=fusion,
            learned=training,
            out_dir=out_dir,
            resume=resume,
            progress=progress,
        )
        targets = scorer.targets
        study = SessionStudy(
            dataset.name,
            stage,
            gap_minutes,
            len(chosen),
            model,
            learned=training or {},
            profile_sessions=profile_sessions,
        )
        for name in baselines if stage == "test" else ():
            study.systems.append(scorer(name, "baseline", rankings[name]))
        for name in ("cooc", "transition", "popularity", FUSED, TUNED):
            study.systems.append(scorer(name, "retrieval", rankings[name]))
        if LEARNED in rankings:
            study.systems.append(scorer(LEARNED, "ranking", rankings[LEARNED]))
        for source in LONG_TERM:
            names = {a: f"vector α={a:g} (u_l: {source})" for a in alphas}
            if not all(n in rankings for n in names.values()):
                continue
            sweep = {f"{a:g}": accuracy(targets, rankings[n], ["ndcg@10"])["ndcg@10"] for a, n in names.items()}
            study.alpha_sweep[source] = sweep
            if stage == "valid":  # ties go to the larger alpha: the cheaper short-term vector
                picks[f"alpha ({source})"] = max(alphas, key=lambda a: (sweep[f"{a:g}"], a))
            alpha = picks[f"alpha ({source})"]
            study.systems.append(scorer(f"vector α={alpha:g} (u_l: {source})", "alpha", rankings[names[alpha]]))
        if "static profile" in study.alpha_sweep:  # profiles compared where u_l counts (alpha = 1 ignores it)
            shown = {x.name for x in study.systems}
            for a in (0.0, 0.5):
                for source in LONG_TERM:
                    name = f"vector α={a:g} (u_l: {source})"
                    if name in rankings and name not in shown:
                        study.systems.append(scorer(name, "alpha", rankings[name]))
        if records:
            full = records.get("verbalizer, full") or next(iter(records.values()))
            if stage == "valid":
                results, _, _ = score(full, WEIGHTS)
                picks["llm weight"] = max(WEIGHTS, key=lambda w: (results[label(w)]["ndcg@10"], -w))
            weight = picks["llm weight"]
            total = RankErrors()
            for run, recs in records.items():
                _, _, fused = score(recs, (1.0, weight))
                rankings[f"LLM {run}"] = fused[label(1.0)]
                rankings[f"retrieval + LLM {run} (w={weight:g})"] = fused[label(weight)]
                study.systems.append(scorer(f"LLM {run}", "llm", fused[label(1.0)]))
                if weight not in (0.0, 1.0) or run == "verbalizer, full":  # the full pipeline is always shown
                    study.systems.append(scorer(f"retrieval + LLM {run} (w={weight:g})", "llm", fused[label(weight)]))
                study.cost[run] = _cost(recs)
                for r in recs:
                    total += RankErrors(**r.errors)
            study.errors = {**total.model_dump(), **total.rates()}
        study.chosen = dict(picks) | {f"fusion weight ({k})": v for k, v in fusion.items()}
        if stage == "test":
            valid = studies["valid"].systems
            ours_best = max(valid, key=lambda x: x.metrics["ndcg@10"]).name if valid else None
            study.significance = _comparisons(study, rankings, targets, ours_best)
        studies[stage] = study
    studies["test"].seconds = round(time.perf_counter() - started, 1)
    await asyncio.to_thread(write_session_study, studies, out_dir)
    return studies


def _comparisons(
    study: SessionStudy,
    rankings: Mapping[str, Mapping[str, list[str]]],
    targets: Mapping[str, list[str]],
    ours_best: str | None,
) -> list[dict[str, object]]:
    """The paired tests the report's conclusions rest on.

    driftrec's best system is the one best on validation (``ours_best``), not on test; the best
    baseline is picked on test, which can only favour the baseline.
    """
    tests = []
    theirs = [s for s in study.systems if s.group == "baseline" and s.name != "random"]
    if ours_best in rankings and theirs:
        bar = max(theirs, key=lambda s: s.metrics["ndcg@10"])
        tests.append(_paired(targets, rankings, ours_best, bar.name))
    if "static profile" in study.alpha_sweep:
        # At alpha = 1 the long-term vector is ignored, so profiles are compared where they matter:
        # long-term only (alpha = 0) and the configured blend (alpha = 0.5).
        for a in (0.0, 0.5):
            evolving = f"vector α={a:g} (u_l: evolving profile)"
            for other in ("static profile", "history"):
                b = f"vector α={a:g} (u_l: {other})"
                if evolving in rankings and b in rankings:
                    tests.append(_paired(targets, rankings, evolving, b))
    for other in ("static-profile", "no-profile", "no-session", "raw-history"):
        a, b = "LLM verbalizer, full", f"LLM verbalizer, {other}"
        if a in rankings and b in rankings:
            tests.append(_paired(targets, rankings, a, b))
    if "LLM verbalizer, full" in rankings:
        tests.append(_paired(targets, rankings, "LLM verbalizer, full", TUNED))
    return tests


def write_session_study(studies: Mapping[str, SessionStudy], out_dir: Path) -> Path:
    from driftrec.plots import alpha_sweep, metric_bars

    path = report_files(out_dir, "sessions", studies, note=f"Chosen on validation: {studies['valid'].chosen}")
    test = studies["test"]
    metric_bars(
        [(s.name, s.metrics["ndcg@10"], s.ci) for s in test.systems],
        out_dir / "sessions-ndcg.png",
        f"session replay, test, {test.users} users: NDCG@10 with 95 % intervals",
    )
    if test.alpha_sweep:
        alpha_sweep(test.alpha_sweep, out_dir / "sessions-alpha.png", f"test, {test.users} users")
    profile_rows = [s for s in test.systems if any(w in s.name for w in ("profile", "u_l: history", ", full"))]
    if profile_rows:
        metric_bars(
            [(s.name, s.metrics["ndcg@10"], s.ci) for s in profile_rows],
            out_dir / "sessions-profiles.png",
            "static vs evolving profile (and none): NDCG@10",
        )
    return path
