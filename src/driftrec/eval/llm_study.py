"""What the LLM adds: LLM rankers over exactly the candidates retrieval gives, fused at several weights.

Per user (leave-one-out by time, the chosen stage), the study records the retrieval order of the top-N
candidates and the LLM's order of the same candidates; every fusion weight is then scored offline from
those two lists, so sweeping weights costs no LLM call. The weight is chosen on the validation stage
and applied to the test stage. Candidate settings:

- ``retrieved``: driftrec's fused top-N (the real pipeline; recall is capped by retrieval's);
- ``sampled``: the held-out item plus 19 random unseen items, seeded, in random order (LLMRank's and
  RecLM-eval's setting, where chance is NDCG@10 ~ 0.14).

Context ablations (``context``): ``full`` (profile + session summaries + recent items), ``no-profile``,
``no-session`` (neither summaries nor recent items), ``static-profile`` (the first profile version,
never updated), ``raw-history`` (no profile, no summaries, the last 50 items as titles: LLMRank's
prompt, for the cost comparison). Profiles come from replaying each user's last sessions through
memory (``build_profiles``), exactly as production builds them.

A prediction is a ``Case`` (what the user had done, what they did next, when), so the same collection
serves leave-one-out (one target item) and session replay (the next session's items).

Engineering: every LLM response goes through the on-disk cache (re-runs are nearly free); each user's
record is appended to a JSONL file as it finishes, and ``resume`` skips users already recorded.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.metrics import accuracy, bootstrap_ci, per_user, significance
from driftrec.eval.protocols import Case, first_users, leave_one_out, leave_one_out_cases
from driftrec.eval.report import write_report as report_files
from driftrec.eval.retrieval_study import ingest
from driftrec.llm import LLM
from driftrec.memory.profiles import profile_document, summary_document
from driftrec.memory.replay import replay
from driftrec.memory.service import Memory
from driftrec.models import Candidate, Interaction, InterestProfile, Provenance, SessionSummary
from driftrec.prompts import load_template
from driftrec.ranking import RankErrors, RankingPolicy, Reranker, build_context
from driftrec.ranking.aggregate import fuse_with_retrieval
from driftrec.records import append_record, read_records, safe_name
from driftrec.retrieval import CandidateGenerator, RetrievalRequest

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
METRICS = ("ndcg@10", "hit_rate@10", "mrr@10", "hit_rate@1", "ndcg@5", "hit_rate@20")
CONTEXTS = ("full", "no-profile", "no-session", "static-profile", "raw-history")
RAW_HISTORY_ITEMS = 50  # LLMRank's raw-history prompt: the last 50 items as titles


@dataclass
class UserMemory:
    """What memory knows about a user at the split point (from a replay)."""

    evolving: InterestProfile
    static: InterestProfile
    summaries: list[SessionSummary]
    evolving_vector: np.ndarray | None = None  # u_l of the current version, as production uses it
    static_vector: np.ndarray | None = None  # u_l of the first version
    versions: list[InterestProfile] = field(default_factory=list)  # every version, oldest first


@dataclass
class Record:
    user: str
    target: str | list[str]
    retrieval: list[str]
    llm: list[str]
    errors: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    degraded: bool
    cached: int = 0


@dataclass
class LLMStudy:
    dataset: str
    stage: str
    mode: str
    setting: str
    context: str
    shuffles: int
    users: int
    model: str
    prompt: str | None
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # "w=0.25" -> metrics
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # ndcg@10 CI per weight
    best_weight: float = 0.0
    significance: dict[str, object] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"{self.mode}, {self.setting} candidates, context {self.context}, {self.shuffles} shuffle(s), "
            f"{self.users} users, {self.stage} stage, model {self.model}, prompt {self.prompt}",
            "",
            "| LLM weight | " + " | ".join(METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for name, metrics in self.results.items():
            lo, hi = self.intervals.get(name, (0.0, 0.0))
            cells = [f"{metrics[m]:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if m == "ndcg@10" else "") for m in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def label(weight: float) -> str:
    return f"w={weight:g}"


def sampled_candidates(dataset: Dataset, seen: set[str], target: str, seed: str, n: int = 20) -> list[Candidate]:
    """The target and n-1 random unseen items, in a seeded random order (the reference order)."""
    rng = random.Random(seed)
    pool = sorted(i for i in dataset.items if i not in seen and i != target)
    ids = [target, *rng.sample(pool, n - 1)]
    rng.shuffle(ids)
    return [
        Candidate(item=dataset.items[i], score=0.0, provenance=[Provenance(source="sampled", score=0.0, rank=r)])
        for r, i in enumerate(ids, start=1)
    ]


async def build_profiles(
    settings: Settings,
    dataset: Dataset,
    llm: LLM,
    users: Sequence[str],
    stage: str,
    *,
    sessions: int = 3,
    gap_minutes: float = 1440.0,
    histories: Mapping[str, Sequence[Interaction]] | None = None,
    tag: str = "loo",
    progress: Callable[[str], None] | None = None,
) -> dict[str, UserMemory]:
    """Replay each user's last ``sessions`` sessions before the split through a fresh memory.

    ``histories`` is what each user had done before the prediction (default: leave-one-out's); nothing
    after it reaches memory. Memories persist in the data directory per protocol, stage and depth, so
    a re-run (or a crashed one) reuses the profiles already built.
    """
    if histories is None:
        histories = {u: c.history for u, c in leave_one_out_cases(dataset, stage)[0].items()}
    model = safe_name(llm.client.model)  # each model replays its own memories
    folder = settings.data_dir / f"replay-{tag}-{stage}-s{sessions}-g{gap_minutes:g}-{model}"
    own = settings.model_copy(
        update={
            "data_dir": folder,
            "chroma_path": folder / "chroma",
            "memory_session_gap_minutes": gap_minutes,
        }
    )
    memory = await asyncio.to_thread(Memory.open, own, dataset.items, llm)
    semaphore = asyncio.Semaphore(4)

    async def one(user: str) -> tuple[str, UserMemory]:
        async with semaphore:
            current, _ = await memory.profile(user)
            if current.version == 0:
                await replay(memory, histories[user], max_sessions=sessions)
            history = await memory.history(user)
            summaries = await memory.recent_summaries(user, 3)
            first = await memory.profiles.version(user, history[0].version) if history else None
            last = await memory.profiles.version(user, history[-1].version) if history else None
        if progress:
            progress(user)
        empty = InterestProfile(user=user)
        return user, UserMemory(
            history[-1] if history else empty,
            history[0] if history else empty,
            summaries,
            evolving_vector=last[1] if last else None,
            static_vector=first[1] if first else None,
            versions=history,
        )

    return dict(await asyncio.gather(*(one(u) for u in users)))


async def collect(
    settings: Settings,
    dataset: Dataset,
    llm: LLM,
    *,
    stage: str,
    users: Sequence[str],
    mode: str = "verbalizer",
    setting: str = "retrieved",
    context: str = "full",
    shuffles: int = 1,
    candidates: int = 20,
    memories: dict[str, UserMemory] | None = None,
    cases: Mapping[str, Case] | None = None,
    log: Sequence[Interaction] | None = None,
    generator: CandidateGenerator | None = None,
    out: Path | None = None,
    resume: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Record]:
    """Rank every user's candidates with the LLM; one JSONL line per user as it finishes.

    ``cases`` and ``log`` (the training log for the candidate sources) default to leave-one-out's; a
    ready ``generator`` fitted on that log may be passed instead of refitting one per call.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}")
    if cases is None:
        cases, log = leave_one_out_cases(dataset, stage)
    elif setting == "retrieved" and generator is None and log is None:
        raise ValueError("retrieved candidates for given cases need their training log or a fitted generator")
    done = await asyncio.to_thread(read_records, out, _record, _user) if out is not None and resume else {}
    todo = [u for u in users if u not in done]
    if setting == "retrieved" and todo and generator is None:
        index = await ingest(settings, dataset)
        generator = await asyncio.to_thread(CandidateGenerator.build, settings.retrieval, index, dataset.items, log)
    reranker = Reranker(
        llm,
        RankingPolicy(  # type: ignore[arg-type]
            mode=mode,
            llm_weight=1.0,
            shuffles=shuffles,
            candidates=candidates,
            window=20,
            # Every user is queued at once; the time-out must cover the wait, not only the call.
            timeout_s=max(settings.ranking.timeout_s, settings.llm.timeout_s, 600.0),
        ),
    )
    titles = {i: item.title for i, item in dataset.items.items()}
    lock = asyncio.Lock()
    semaphore = asyncio.Semaphore(settings.llm.max_concurrency)

    async def one(user: str) -> Record:
        case = cases[user]
        history = case.history
        if setting == "retrieved":
            assert generator is not None
            request = RetrievalRequest(user=user, history=history, now=case.now)
            found = await generator.generate(request, candidates)
        else:
            found = sampled_candidates(
                dataset, {e.item for e in history}, case.targets[0], f"{settings.llm.seed}:{user}"
            )
        known = (memories or {}).get(user)
        profile = None
        summaries: list[SessionSummary] = []
        if known is not None and context not in ("no-profile", "raw-history"):
            profile = known.static if context == "static-profile" else known.evolving
        if known is not None and context not in ("no-session", "raw-history"):
            summaries = known.summaries
        recent = {"no-session": 0, "raw-history": RAW_HISTORY_ITEMS}.get(context, settings.ranking.recent_items)
        ctx = build_context(
            user,
            found,
            10,
            history=history,
            catalog=dataset.items,
            profile=profile,
            profile_text=profile_document(profile) if profile is not None and profile.version else "",
            summaries=summaries,
            summary_texts=[summary_document(s, titles) for s in summaries],
            recent_items=recent,
        )
        async with semaphore:
            result = await reranker.rank(ctx)
        retrieval = [c.item.id for c in ctx.eligible()]
        record = Record(
            user=user,
            target=case.targets[0] if len(case.targets) == 1 else case.targets,
            retrieval=retrieval,
            llm=result.llm_order or retrieval,
            errors=result.errors.model_dump(),
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            seconds=round(result.seconds, 3),
            degraded=result.degraded,
            cached=result.usage.cached,
        )
        if out is not None and not result.degraded:  # a degraded ranking is retried by the next run
            async with lock:
                line = json.dumps(asdict(record)) + "\n"
                await asyncio.to_thread(append_record, out, line)
        if progress:
            progress(user)
        return record

    fresh = await asyncio.gather(*(one(u) for u in todo))
    by_user = done | {r.user: r for r in fresh}
    return [by_user[u] for u in users]


def _record(fields: dict[str, object]) -> Record:
    return Record(**fields)  # type: ignore[arg-type]


def _user(record: Record) -> str:
    return record.user


def score(
    records: Sequence[Record], weights: Sequence[float] = WEIGHTS, rrf_k: int = 60
) -> tuple[dict[str, dict[str, float]], dict[str, tuple[float, float]], dict[str, dict[str, list[str]]]]:
    """Metrics for each fusion weight (0: retrieval order, 1: the LLM's order)."""
    targets = {r.user: r.target for r in records}
    results, intervals, rankings = {}, {}, {}
    for weight in weights:
        ranked = {r.user: [i for i, _ in fuse_with_retrieval(r.llm, r.retrieval, weight, rrf_k=rrf_k)] for r in records}
        name = label(weight)
        results[name] = accuracy(targets, ranked, METRICS)
        intervals[name] = bootstrap_ci(per_user(targets, ranked, "ndcg@10"))
        rankings[name] = ranked
    return results, intervals, rankings


def summarize(
    records: Sequence[Record],
    *,
    dataset: str,
    stage: str,
    mode: str,
    setting: str,
    context: str,
    shuffles: int,
    model: str,
    prompt: str | None,
    weights: Sequence[float] = WEIGHTS,
    fixed_weight: float | None = None,
) -> LLMStudy:
    """The study's report; the best weight is chosen here (validation) unless ``fixed_weight`` is given."""
    results, intervals, rankings = score(records, weights)
    best = fixed_weight if fixed_weight is not None else max(weights, key=lambda w: (results[label(w)]["ndcg@10"], -w))
    study = LLMStudy(dataset, stage, mode, setting, context, shuffles, len(records), model, prompt, results, intervals)
    study.best_weight = best
    targets = {r.user: r.target for r in records}
    if best != 0.0 and label(best) in rankings:
        pairs = significance(targets, {label(best): rankings[label(best)], label(0.0): rankings[label(0.0)]}, "ndcg@10")
        study.significance = {
            "metric": "ndcg@10",
            "test": "paired Student's t (ranx)",
            "compared": [label(best), "w=0 (retrieval order)"],
            "p_value": pairs[label(best)][label(0.0)],
            "difference": round(results[label(best)]["ndcg@10"] - results[label(0.0)]["ndcg@10"], 4),
        }
    total = RankErrors()
    for r in records:
        total += RankErrors(**r.errors)
    study.errors = {**total.model_dump(), **{k: round(v, 4) for k, v in total.rates().items()}}
    seconds = [r.seconds for r in records if not r.cached]
    study.cost = {
        "prompt_tokens_per_recommendation": round(statistics.mean(r.prompt_tokens for r in records), 1),
        "completion_tokens_per_recommendation": round(statistics.mean(r.completion_tokens for r in records), 2),
        "latency_mean_s": round(statistics.mean(seconds), 2) if seconds else 0.0,
        "latency_p50_s": round(statistics.median(seconds), 2) if seconds else 0.0,
        "cached_fraction": round(sum(1 for r in records if r.cached) / max(len(records), 1), 3),
        "degraded": sum(r.degraded for r in records),
    }
    return study


async def run_llm_eval(
    settings: Settings,
    dataset: Dataset,
    llm: LLM,
    *,
    users: int | None,
    mode: str = "verbalizer",
    setting: str = "retrieved",
    context: str = "full",
    shuffles: int = 1,
    profile_sessions: int = 0,
    out_dir: Path,
    resume: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, LLMStudy]:
    """Validation (choose the weight) then test (apply it); writes JSONL, JSON, Markdown and a plot.

    The sampled setting has no validation stage: its reference order is random, so there is no weight
    to choose; the test table is the LLM's order (w=1) against the random order (w=0)."""
    started = time.perf_counter()
    chosen = first_users(leave_one_out(dataset), users)
    tag = f"{mode}-{setting}-{context}-x{shuffles}"
    studies: dict[str, LLMStudy] = {}
    weight: float | None = 1.0 if setting == "sampled" else None
    for stage in ("test",) if setting == "sampled" else ("valid", "test"):
        memories = None
        if profile_sessions or context != "full":
            memories = await build_profiles(settings, dataset, llm, chosen, stage, sessions=profile_sessions or 3)
        records = await collect(
            settings,
            dataset,
            llm,
            stage=stage,
            users=chosen,
            mode=mode,
            setting=setting,
            context=context,
            shuffles=shuffles,
            memories=memories,
            out=out_dir / f"{tag}-{stage}.jsonl",
            resume=resume,
            progress=progress,
        )
        prompt = load_template(f"rank_{mode}").id
        studies[stage] = summarize(
            records,
            dataset=dataset.name,
            stage=stage,
            mode=mode,
            setting=setting,
            context=context,
            shuffles=shuffles,
            model=llm.client.model,
            prompt=prompt,
            fixed_weight=weight,
        )
        weight = studies[stage].best_weight
    studies["test"].seconds = round(time.perf_counter() - started, 1)
    chosen = f"Weight chosen on validation: {studies['valid'].best_weight:g}; " if "valid" in studies else ""
    note = f"{chosen}test: {studies['test'].significance}"
    await asyncio.to_thread(_write_outputs, out_dir, tag, studies, note)
    return studies


def _write_outputs(out_dir: Path, tag: str, studies: dict[str, LLMStudy], note: str) -> None:
    from driftrec.plots import weight_sweep

    report_files(out_dir, tag, studies, note=note)

    weight_sweep(studies, out_dir / f"{tag}.png")
