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
them, so a long run resumes. The columns, the fit and the LLM calls are serving's own
(``ranking.second_phase``): what is measured here is what ``driftrec ranker train --second-phase-users``
trains and ``recommend()`` applies.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from driftrec.eval.metrics import accuracy, bootstrap_ci, per_user, significance
from driftrec.ranking.second_phase import COLUMNS, WITHOUT_LLM, LLMScores, fit, window_rows

FOLDS = 5


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
        booster, best, _ = fit([rows[u] for u in rest], [labels[u] for u in rest], columns)
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
