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
prefix cache holds the head across requests). With ``profiles`` a second call per user shows the same
window with the user's long-term profile instead of their items — the LLM's profile-match judgement, two
more columns (``PROFILE_COLUMNS``) measured the same way, with and without them. That profile is the
count-based one (``profile_document``: genres from the user's own ratings before the target, every line
backed by the counts it shows), not a replayed LLM profile, which would cost three LLM sessions per user
before the first ranking (and ``eval.profile_study`` finds the count-based profile the better predictor).
Records are written as each user finishes (JSONL) and a re-run skips them, so a long run resumes. The
columns, the fit and the LLM calls are serving's own (``ranking.second_phase``): what is measured here with
the items' columns is what ``driftrec ranker train --second-phase-users`` trains and ``recommend()``
applies; the profile's columns are measured, not served.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from driftrec.eval.metrics import accuracy, bootstrap_ci, per_user, significance
from driftrec.eval.profile_study import count_profile
from driftrec.memory.evidence import gather
from driftrec.models import Interaction, Item
from driftrec.ranking.second_phase import (
    COLUMNS,
    PROFILE_COLUMNS,
    WITHOUT_LLM,
    LLMScores,
    fit,
    judgement_columns,
    window_rows,
)

FOLDS = 5
STUDY_COLUMNS = (*COLUMNS, *PROFILE_COLUMNS)  # the rows' layout here: serving's columns, then the profile's
PROFILE_INTERESTS = 8  # the strongest interests a profile document names


def profile_document(history: Sequence[Interaction], catalog: Mapping[str, Item]) -> str:
    """The user's count-based long-term profile as the LLM reads it: each genre with more positive than
    negative events is an interest (weight: its positive count over the top genre's), the others dislikes;
    every line carries the counts of the user's own events behind it."""
    evidence = gather(history, catalog)
    names = {g.lower(): g for e in history if (item := catalog.get(e.item)) for g in item.genres}
    weights = count_profile(evidence, names)
    by_name = {names.get(key, key): e for key, e in evidence.items()}

    def line(name: str) -> str:
        e = by_name[name]
        return f"{name} (weight {abs(weights[name]):.2f}; {len(e.positive)} liked, {len(e.negative)} disliked)"

    liked = sorted((n for n, w in weights.items() if w > 0), key=lambda n: (-weights[n], n))[:PROFILE_INTERESTS]
    disliked = sorted((n for n, w in weights.items() if w < 0), key=lambda n: (weights[n], n))
    lines = ["Long-term interests:", *(f"- {line(n)}" for n in liked)] if liked else ["Long-term interests: (none)"]
    if disliked:
        lines.append("Dislikes: " + ", ".join(line(n) for n in disliked))
    return "\n".join(lines)


def study_rows(record: LLMScores, learned_scores: Mapping[str, float], profile: LLMScores | None) -> np.ndarray:
    """One row per shown item over ``STUDY_COLUMNS`` (the profile's columns NaN without a profile call)."""
    judged = (
        judgement_columns(profile, record.shown) if profile is not None else np.full((len(record.shown), 2), np.nan)
    )
    return np.hstack([window_rows(record, learned_scores), judged])


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
    profile_latency: dict[str, float] = field(default_factory=dict)  # the profile calls', when made

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
            "Importance in the phase with every LLM column (gain share): "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.importance.items()),
            "LLM call: " + ", ".join(f"{k} {v:g}" for k, v in self.latency.items()),
        ]
        if self.profile_latency:
            lines.append(
                "LLM call from the profile: " + ", ".join(f"{k} {v:g}" for k, v in self.profile_latency.items())
            )
        return "\n".join(lines)


def cross_fitted(
    records: Mapping[str, LLMScores],
    learned_scores: Mapping[str, Mapping[str, float]],
    targets: Mapping[str, str | Sequence[str]],
    columns: Sequence[str],
    profiles: Mapping[str, LLMScores] | None = None,
) -> tuple[dict[str, list[str]], list[int], dict[str, float]]:
    """Each fold's windows ordered by a second phase trained on the other folds' users. Returns the
    orders, each fold's best iteration, and the columns' gain share (mean over folds)."""
    users = sorted(records)
    rows = {u: study_rows(records[u], learned_scores[u], (profiles or {}).get(u)) for u in users}
    wanted = {u: {t} if isinstance(t, str) else set(t) for u, t in targets.items()}
    labels = {u: np.array([float(i in wanted[u]) for i in records[u].shown]) for u in users}
    use = [STUDY_COLUMNS.index(c) for c in columns]
    orders: dict[str, list[str]] = {}
    iterations: list[int] = []
    gains = np.zeros(len(columns))
    for fold in range(FOLDS):
        held = users[fold::FOLDS]
        rest = [u for n, u in enumerate(users) if n % FOLDS != fold and labels[u].any()]
        booster, best, _ = fit([rows[u] for u in rest], [labels[u] for u in rest], columns, STUDY_COLUMNS)
        iterations.append(best)
        gain = np.asarray(booster.feature_importance("gain", iteration=best), np.float64)  # type: ignore[attr-defined]
        gains += gain / gain.sum() if gain.sum() > 0 else gain
        for user in held:
            scores = booster.predict(rows[user][:, use], num_iteration=best)  # type: ignore[attr-defined]
            orders[user] = [records[user].shown[n] for n in np.argsort(-scores, kind="stable")]
    return orders, iterations, {c: round(float(g / FOLDS), 4) for c, g in zip(columns, gains, strict=True)}


def call_latency(records: Sequence[LLMScores]) -> dict[str, float]:
    """Seconds per uncached LLM call (p50, p95) and the mean prompt tokens."""
    asked = [r for r in records if not r.cached and r.seconds > 0]
    if not asked:
        return {"calls": 0}
    seconds = sorted(r.seconds for r in asked)
    return {
        "calls": len(asked),
        "p50 s": round(statistics.median(seconds), 3),
        "p95 s": round(seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 3),
        "mean prompt tokens": round(statistics.fmean(r.prompt_tokens for r in asked)),
    }


def measure(
    records: Mapping[str, LLMScores],
    learned: Mapping[str, Sequence[str]],
    learned_scores: Mapping[str, Mapping[str, float]],
    targets: Mapping[str, str | Sequence[str]],
    *,
    window: int,
    model: str,
    profiles: Mapping[str, LLMScores] | None = None,
) -> LLMFeatureStudy:
    """The with/without-LLM second phases beside the learned order and the LLM's own order of the window; with
    ``profiles`` (the profile calls' records, the same users and windows) also the phases with the profile's
    columns, alone and beside the LLM's."""
    users = sorted(records)
    here = {u: targets[u] for u in users}
    every = STUDY_COLUMNS if profiles else COLUMNS
    with_all, with_iterations, importance = cross_fitted(records, learned_scores, here, every, profiles)
    without_llm, without_iterations, _ = cross_fitted(records, learned_scores, here, WITHOUT_LLM)

    def completed(head: Mapping[str, list[str]]) -> dict[str, list[str]]:  # the window re-ordered, the rest kept
        return {u: [*head[u], *[i for i in learned[u] if i not in set(head[u])]] for u in users}

    systems = {
        "driftrec-learned": {u: list(learned[u]) for u in users},
        "LLM order of the window": completed({u: records[u].order for u in users}),
        "second phase without LLM columns": completed(without_llm),
    }
    iterations = {"without LLM": without_iterations}
    if profiles:
        with_llm, iterations["with LLM"], _ = cross_fitted(records, learned_scores, here, COLUMNS)
        with_profile, iterations["with profile"], _ = cross_fitted(
            records, learned_scores, here, (*WITHOUT_LLM, *PROFILE_COLUMNS), profiles
        )
        iterations["with LLM and profile"] = with_iterations
        systems |= {
            "second phase with LLM columns": completed(with_llm),
            "LLM order of the window from the profile": completed({u: profiles[u].order for u in users}),
            "second phase with profile columns": completed(with_profile),
            "second phase with LLM and profile columns": completed(with_all),
        }
    else:
        iterations["with LLM"] = with_iterations
        systems["second phase with LLM columns"] = completed(with_all)
    ndcg = {name: accuracy(here, ranked, ["ndcg@10"])["ndcg@10"] for name, ranked in systems.items()}
    ci = {name: bootstrap_ci(per_user(here, ranked, "ndcg@10")) for name, ranked in systems.items()}

    def paired(a: str, b: str) -> dict[str, float]:
        if all(systems[a][u][:10] == systems[b][u][:10] for u in users):
            return {"difference": 0.0, "p_value": 1.0}
        p = significance(here, {"a": systems[a], "b": systems[b]}, "ndcg@10")["a"]["b"]
        return {"difference": round(ndcg[a] - ndcg[b], 4), "p_value": p}

    tests = {
        "with LLM columns vs without": paired("second phase with LLM columns", "second phase without LLM columns"),
        "with LLM columns vs learned": paired("second phase with LLM columns", "driftrec-learned"),
        "LLM order vs learned": paired("LLM order of the window", "driftrec-learned"),
    }
    if profiles:
        tests |= {
            "with profile columns vs without": paired(
                "second phase with profile columns", "second phase without LLM columns"
            ),
            "with LLM and profile columns vs LLM columns": paired(
                "second phase with LLM and profile columns", "second phase with LLM columns"
            ),
            "LLM order from the profile vs learned": paired(
                "LLM order of the window from the profile", "driftrec-learned"
            ),
        }
    return LLMFeatureStudy(
        users=len(users),
        window=window,
        model=model,
        ndcg=ndcg,
        ci95=ci,
        tests=tests,
        importance=importance,
        iterations=iterations,
        latency=call_latency(list(records.values())),
        missing=sum(len(r.shown) - len(r.logprobs) for r in records.values()),
        profile_latency=call_latency([profiles[u] for u in users]) if profiles else {},
    )
