"""The served LLM as a feature of the learned ranker, measured (issue 14: what the LLM adds, as a number).

For every user the learned stage's top ``window`` on the test stage is shown once to the served LLM
through the verbalizer (one forward pass; the candidate labels' next-token log-probabilities). Each
candidate gets two columns: its label's probability among the window's labels (log-softmax over them;
NaN when the server gave none) and its place in the LLM's order. A second phase, LambdaMART over the
learned score and rank, re-orders the window twice: with the two LLM columns and without them. Both are
cross-fitted over users (``FOLDS`` folds, each ordered by a model trained on the others, early stopping
on a share of those), so no user's target trains the model that ranks them, and the pair separates what
the LLM adds from what a second phase alone does.

The prompt carries the user's latest items (their stable head first, the candidates last, so vLLM's
prefix cache holds the head across requests); no replayed profile, which would cost three LLM sessions
per user before the first ranking. Records are written as each user finishes (JSONL) and a re-run skips
them, so a long run resumes.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftrec.data.dataset import Dataset
from driftrec.eval.metrics import accuracy, bootstrap_ci, per_user, significance
from driftrec.eval.protocols import UserSplit
from driftrec.eval.records import append_record, read_records
from driftrec.llm import LLM, LLMError
from driftrec.models import Candidate, Provenance
from driftrec.prompts import PromptError
from driftrec.ranking.context import build_context
from driftrec.ranking.verbalizer import rank_verbalizer

COLUMNS = ("learned_score", "learned_rank", "llm_logprob", "llm_rank")
WITHOUT_LLM = COLUMNS[:2]
# The second phase may not undo either judgement, only weigh them: a higher learned score or LLM probability
# never lowers a candidate, a later place never raises it. Unconstrained, the without-LLM twin (two views of
# one order) learned steps that reshuffled the learned order and lost 0.008 NDCG@10 to it (SmolLM2 run).
MONOTONE = {"learned_score": 1, "learned_rank": -1, "llm_logprob": 1, "llm_rank": -1}
FOLDS = 5
PARAMS: dict[str, object] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 50,
    "lambda_l2": 10.0,
    "num_threads": 2,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "verbosity": -1,
}


@dataclass
class LLMScores:
    """One user's window as the LLM saw it, and what it said."""

    user: str
    shown: list[str]  # the learned stage's top items, in the order shown (learned order)
    logprobs: dict[str, float]  # item -> log-probability among the window's labels (log-softmax)
    order: list[str]  # the LLM's order of ``shown``
    seconds: float = 0.0
    prompt_tokens: int = 0
    cached: bool = False


@dataclass
class LLMFeatureStudy:
    users: int
    window: int
    model: str
    ndcg: dict[str, float]  # system -> NDCG@10 (test, all users)
    ci95: dict[str, tuple[float, float]]
    tests: dict[str, dict[str, float]]  # paired: difference and p
    importance: dict[str, float]  # gain share of each column in the with-LLM phase, mean over folds
    iterations: dict[str, list[int]]  # best iteration per fold, per variant
    latency: dict[str, float]  # seconds per LLM call: p50, p95, mean prompt tokens (uncached calls)
    missing: int = 0  # candidates whose label got no logprob

    def markdown(self) -> str:
        lines = [
            f"LLM as a ranker feature ({self.model}, the learned stage's top {self.window}, {self.users} users, "
            f"second phase cross-fitted over {FOLDS} folds):",
            "",
            "| order | NDCG@10 [95% CI] |",
            "|---|---|",
        ]
        for name, value in self.ndcg.items():
            low, high = self.ci95[name]
            lines.append(f"| {name} | {value:.4f} [{low:.3f}, {high:.3f}] |")
        lines += ["", "| comparison | NDCG@10 difference | p (paired t) |", "|---|---|---|"]
        for name, t in self.tests.items():
            lines.append(f"| {name} | {t['difference']:+.4f} | {t['p_value']:.2g} |")
        lines += [
            "",
            "Importance in the with-LLM phase (gain share): "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.importance.items()),
            "LLM call: " + ", ".join(f"{k} {v:g}" for k, v in self.latency.items()),
        ]
        return "\n".join(lines)


def normalized(logprobs: Mapping[str, float]) -> dict[str, float]:
    """Log-softmax over the labels that got a finite logprob: each label's log-probability among the window's."""
    finite = {k: v for k, v in logprobs.items() if math.isfinite(v)}
    if not finite:
        return {}
    top = max(finite.values())
    total = top + math.log(sum(math.exp(v - top) for v in finite.values()))
    return {k: v - total for k, v in finite.items()}


def _scores(fields: dict[str, Any]) -> LLMScores:
    return LLMScores(**fields)


def _user(record: LLMScores) -> str:
    return record.user


async def score_windows(
    llm: LLM,
    dataset: Dataset,
    splits: Mapping[str, UserSplit],
    windows: Mapping[str, Sequence[str]],
    *,
    recent_items: int = 10,
    out: Path | None = None,
    concurrency: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, LLMScores]:
    """Ask the LLM about each user's window (test stage: history before the test item); resumable via ``out``."""
    done = await asyncio.to_thread(read_records, out, _scores, _user) if out is not None else {}
    todo = [u for u in windows if u not in done]
    semaphore = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def one(user: str) -> LLMScores:
        shown = [
            Candidate(item=dataset.items[i], score=0.0, provenance=[Provenance(source="learned", score=0.0, rank=r)])
            for r, i in enumerate(windows[user], start=1)
        ]
        context = build_context(
            user, shown, 10, history=splits[user].seen_before("test"), catalog=dataset.items, recent_items=recent_items
        )
        async with semaphore:
            started = time.perf_counter()
            try:
                reply = await rank_verbalizer(llm, context, shown, window=len(shown))
            except (LLMError, PromptError) as exc:  # not recorded: the next run asks again
                if progress:
                    progress(f"{user}: {type(exc).__name__}: {exc}")
                return LLMScores(user, list(windows[user]), {}, list(windows[user]))
            seconds = time.perf_counter() - started
        record = LLMScores(
            user,
            list(windows[user]),
            normalized(reply.logprobs),
            reply.order,
            round(seconds, 3),
            reply.usage.prompt_tokens,
            bool(reply.usage.cached),
        )
        if out is not None:
            async with lock:
                await asyncio.to_thread(append_record, out, json.dumps(record.__dict__) + "\n")
        if progress:
            progress(user)
        return record

    fresh = await asyncio.gather(*(one(u) for u in todo))
    return done | {r.user: r for r in fresh}


def window_rows(record: LLMScores, learned_scores: Mapping[str, float]) -> np.ndarray:
    """One row per shown item over ``COLUMNS``, in the shown (learned) order."""
    llm_rank = {item: n for n, item in enumerate(record.order, start=1)}
    return np.array(
        [
            [
                learned_scores[item],
                n,
                record.logprobs.get(item, np.nan),
                llm_rank.get(item, len(record.shown) + 1),
            ]
            for n, item in enumerate(record.shown, start=1)
        ],
        np.float64,
    )


def _fit(rows: list[np.ndarray], labels: list[np.ndarray], columns: Sequence[str]) -> tuple[object, int]:
    """LambdaMART on the given users' windows, early stopping on every fifth of them."""
    import lightgbm as lgb

    use = [COLUMNS.index(c) for c in columns]
    stop = set(range(0, len(rows), 5))
    train = [n for n in range(len(rows)) if n not in stop]

    def dataset(members: Sequence[int], reference: object = None) -> object:
        x = np.vstack([rows[n][:, use] for n in members])
        y = np.concatenate([labels[n] for n in members])
        return lgb.Dataset(x, y, group=[len(rows[n]) for n in members], feature_name=list(columns), reference=reference)

    fit_set = dataset(train)
    booster = lgb.train(
        {**PARAMS, "monotone_constraints": [MONOTONE[c] for c in columns]},
        fit_set,
        num_boost_round=500,
        valid_sets=[dataset(sorted(stop), fit_set)],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    return booster, max(1, booster.best_iteration)


def cross_fitted(
    records: Mapping[str, LLMScores],
    learned_scores: Mapping[str, Mapping[str, float]],
    targets: Mapping[str, str | Sequence[str]],
    columns: Sequence[str],
) -> tuple[dict[str, list[str]], list[int], dict[str, float]]:
    """Each fold's windows ordered by a second phase trained on the other folds' users. Returns the
    orders, each fold's best iteration, and the columns' gain share (mean over folds)."""
    users = sorted(records)
    rows = {u: window_rows(records[u], learned_scores[u]) for u in users}
    wanted = {u: {t} if isinstance(t, str) else set(t) for u, t in targets.items()}
    labels = {u: np.array([float(i in wanted[u]) for i in records[u].shown]) for u in users}
    use = [COLUMNS.index(c) for c in columns]
    orders: dict[str, list[str]] = {}
    iterations: list[int] = []
    gains = np.zeros(len(columns))
    for fold in range(FOLDS):
        held = users[fold::FOLDS]
        rest = [u for n, u in enumerate(users) if n % FOLDS != fold and labels[u].any()]
        booster, best = _fit([rows[u] for u in rest], [labels[u] for u in rest], columns)
        iterations.append(best)
        gain = np.asarray(booster.feature_importance("gain", iteration=best), np.float64)  # type: ignore[attr-defined]
        gains += gain / gain.sum() if gain.sum() > 0 else gain
        for user in held:
            scores = booster.predict(rows[user][:, use], num_iteration=best)  # type: ignore[attr-defined]
            orders[user] = [records[user].shown[n] for n in np.argsort(-scores, kind="stable")]
    return orders, iterations, {c: round(float(g / FOLDS), 4) for c, g in zip(columns, gains, strict=True)}


def measure(
    records: Mapping[str, LLMScores],
    learned: Mapping[str, Sequence[str]],
    learned_scores: Mapping[str, Mapping[str, float]],
    targets: Mapping[str, str | Sequence[str]],
    *,
    window: int,
    model: str,
) -> LLMFeatureStudy:
    """The with/without-LLM second phases beside the learned order and the LLM's own order of the window."""
    users = sorted(records)
    here = {u: targets[u] for u in users}
    with_llm, with_iterations, importance = cross_fitted(records, learned_scores, here, COLUMNS)
    without_llm, without_iterations, _ = cross_fitted(records, learned_scores, here, WITHOUT_LLM)

    def completed(head: Mapping[str, list[str]]) -> dict[str, list[str]]:  # the window re-ordered, the rest kept
        return {u: [*head[u], *[i for i in learned[u] if i not in set(head[u])]] for u in users}

    systems = {
        "driftrec-learned": {u: list(learned[u]) for u in users},
        "LLM order of the window": completed({u: records[u].order for u in users}),
        "second phase without LLM columns": completed(without_llm),
        "second phase with LLM columns": completed(with_llm),
    }
    ndcg = {name: accuracy(here, ranked, ["ndcg@10"])["ndcg@10"] for name, ranked in systems.items()}
    ci = {name: bootstrap_ci(per_user(here, ranked, "ndcg@10")) for name, ranked in systems.items()}

    def paired(a: str, b: str) -> dict[str, float]:
        if all(systems[a][u][:10] == systems[b][u][:10] for u in users):
            return {"difference": 0.0, "p_value": 1.0}
        p = significance(here, {"a": systems[a], "b": systems[b]}, "ndcg@10")["a"]["b"]
        return {"difference": round(ndcg[a] - ndcg[b], 4), "p_value": p}

    asked = [r for r in records.values() if not r.cached and r.seconds > 0]
    seconds = sorted(r.seconds for r in asked)
    latency = (
        {
            "calls": len(asked),
            "p50 s": round(statistics.median(seconds), 3),
            "p95 s": round(seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 3),
            "mean prompt tokens": round(statistics.fmean(r.prompt_tokens for r in asked)),
        }
        if asked
        else {"calls": 0}
    )
    return LLMFeatureStudy(
        users=len(users),
        window=window,
        model=model,
        ndcg=ndcg,
        ci95=ci,
        tests={
            "with LLM columns vs without": paired("second phase with LLM columns", "second phase without LLM columns"),
            "with LLM columns vs learned": paired("second phase with LLM columns", "driftrec-learned"),
            "LLM order vs learned": paired("LLM order of the window", "driftrec-learned"),
        },
        importance=importance,
        iterations={"with LLM": with_iterations, "without LLM": without_iterations},
        latency=latency,
        missing=sum(len(r.shown) - len(r.logprobs) for r in records.values()),
    )
