"""Profile quality: does the long-term profile predict what the user does next?

For each user of the session-replay protocol, memory has replayed the last ``profile_sessions``
sessions before the target session (the same replay the session study uses). The target session's
rated items are then scored by the profile alone: the sum of the weights of the item's genres that are
interests, minus those that are dislikes. Two measures per user:

- AUC: the chance that an item the user liked (rating ≥ 4, a like) scores above one they disliked
  (rating ≤ 2, a dislike or skip), ties counted half; users with both kinds of item;
- NDCG@10: the target session's rated items ranked by score, liked items relevant; users with a liked item.

Profiles compared, on the same users and the same events:
- the LLM profile after the replay (``evolving``), and its first version (``static``);
- a count-based profile built from the same replayed sessions with no LLM (every genre with more
  positive than negative events is an interest weighted by its positive count, the others dislikes);
- no profile (every item scores 0: the ranking is the catalog order, AUC 0.5).

Ties are broken by a fixed hash of the item id, so a profile that cannot tell items apart scores as a
random order would, and every profile faces the same tie-break.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.llm_study import build_profiles
from driftrec.eval.metrics import bootstrap_ci
from driftrec.eval.protocols import first_users, session_replay
from driftrec.eval.report import write_report as report_files
from driftrec.llm import LLM
from driftrec.memory.evidence import GenreEvidence, gather, polarity
from driftrec.memory.sessions import sessionize
from driftrec.models import Interaction, InterestProfile, Item

PROFILES = ("llm (evolving)", "llm (static: first version)", "count-based (no LLM)", "no profile")


def genre_scores(profile: InterestProfile) -> dict[str, float]:
    """Genre -> signed weight: interests positive, dislikes negative."""
    scores = {i.name: i.weight for i in profile.interests}
    for d in profile.dislikes:
        scores[d.name] = scores.get(d.name, 0.0) - d.weight
    return scores


def count_profile(evidence: Mapping[str, GenreEvidence], names: Mapping[str, str]) -> dict[str, float]:
    """The no-LLM profile: a genre with more positive than negative events is an interest weighted by
    its positive count over the top genre's; one with more negative is a dislike, likewise."""
    top_pos = max((len(e.positive) for e in evidence.values()), default=0) or 1
    top_neg = max((len(e.negative) for e in evidence.values()), default=0) or 1
    scores: dict[str, float] = {}
    for key, e in evidence.items():
        pos, neg = len(e.positive), len(e.negative)
        if pos > neg:
            scores[names.get(key, key)] = pos / top_pos
        elif neg > pos:
            scores[names.get(key, key)] = -neg / top_neg
    return scores


def item_score(item: Item, genres: Mapping[str, float]) -> float:
    return sum(genres.get(g, 0.0) for g in item.genres)


def _tiebreak(item: str) -> int:
    return int(hashlib.sha256(item.encode()).hexdigest()[:8], 16)


def auc(liked: Sequence[float], disliked: Sequence[float]) -> float:
    """P(score of a liked item > score of a disliked one), ties half."""
    wins = sum((a > b) + 0.5 * (a == b) for a in liked for b in disliked)
    return wins / (len(liked) * len(disliked))


def ndcg_at(ranked_relevance: Sequence[int], k: int = 10) -> float:
    gains = [rel / np.log2(rank + 2) for rank, rel in enumerate(ranked_relevance[:k])]
    ideal = [1 / np.log2(rank + 2) for rank in range(min(k, sum(ranked_relevance)))]
    return float(sum(gains) / sum(ideal)) if ideal else 0.0


def score_user(target: Sequence[Interaction], catalog: Mapping[str, Item], genres: Mapping[str, float]) -> dict:
    """AUC and NDCG@10 of one profile on one user's target session (None where undefined)."""
    rated = {}
    for event in target:  # the latest reaction to an item counts
        if event.item in catalog and polarity(event) != 0:
            rated[event.item] = polarity(event)
    scored = {i: item_score(catalog[i], genres) for i in rated}
    liked = [scored[i] for i, p in rated.items() if p > 0]
    disliked = [scored[i] for i, p in rated.items() if p < 0]
    order = sorted(rated, key=lambda i: (-scored[i], _tiebreak(i)))
    return {
        "auc": auc(liked, disliked) if liked and disliked else None,
        "ndcg@10": ndcg_at([int(rated[i] > 0) for i in order]) if liked else None,
    }


@dataclass
class ProfileRow:
    name: str
    auc: float
    auc_ci: tuple[float, float]
    auc_users: int
    ndcg: float
    ndcg_ci: tuple[float, float]
    ndcg_users: int
    interests: float  # mean interests per profile
    dislikes: float


@dataclass
class ProfileStudy:
    dataset: str
    stage: str
    users: int
    model: str | None
    profile_sessions: int
    gap_minutes: float
    rows: list[ProfileRow] = field(default_factory=list)
    tests: list[dict[str, object]] = field(default_factory=list)
    rejected_per_100_updates: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["machine"] = f"{platform.machine()} python {platform.python_version()}"
        return data

    def markdown(self) -> str:
        lines = [
            f"Profile quality, {self.dataset} session replay ({self.stage} session), {self.users} users, "
            f"model {self.model or '(none)'}, profiles from the last {self.profile_sessions} sessions "
            f"(gap {self.gap_minutes:g} min)",
            "",
            "| profile | AUC liked vs disliked [95% CI] | users | NDCG@10 [95% CI] | users | interests | dislikes |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.name} | {r.auc:.3f} [{r.auc_ci[0]:.3f}, {r.auc_ci[1]:.3f}] | {r.auc_users} | "
                f"{r.ndcg:.3f} [{r.ndcg_ci[0]:.3f}, {r.ndcg_ci[1]:.3f}] | {r.ndcg_users} | "
                f"{r.interests:.1f} | {r.dislikes:.1f} |"
            )
        for t in self.tests:
            lines.append(
                f"\n{t['a']} vs {t['b']}, {t['metric']}: difference {t['difference']:+.3f}, "
                f"p = {t['p_value']:.3g} (paired t, {t['n']} users)"
            )
        if self.rejected_per_100_updates is not None:
            lines.append(
                f"\nLLM claims rejected by the evidence rule: {self.rejected_per_100_updates:.1f} per 100 updates"
            )
        return "\n".join(lines)


async def run_profile_study(
    settings: Settings,
    dataset: Dataset,
    llm: LLM | None,
    *,
    users: int | None = None,
    stage: str = "test",
    profile_sessions: int = 2,
    gap_minutes: float = 1440.0,
    progress: Callable[[str], None] | None = None,
) -> ProfileStudy:
    """Replay memory for each user (LLM profiles only when ``llm`` is given) and score every profile."""
    started = time.perf_counter()
    splits = session_replay(dataset, gap_minutes=gap_minutes)
    chosen = first_users(splits, users)
    histories = {u: splits[u].seen_before(stage) for u in chosen}
    memories = (
        await build_profiles(
            settings,
            dataset,
            llm,
            chosen,
            stage,
            sessions=profile_sessions,
            gap_minutes=gap_minutes,
            histories=histories,
            tag="sessions",
            progress=progress,
        )
        if llm is not None
        else {}
    )
    names = {" ".join(g.lower().split()): g for item in dataset.items.values() for g in item.genres}
    per_profile: dict[str, dict[str, list[float | None]]] = {p: {"auc": [], "ndcg@10": []} for p in PROFILES}
    sizes: dict[str, list[tuple[int, int]]] = {p: [] for p in PROFILES}
    for user in chosen:
        window = [e for s in _last_sessions(histories[user], gap_minutes, profile_sessions) for e in s]
        counted = count_profile(gather(window, dataset.items), names)
        profiles: dict[str, dict[str, float] | None] = {
            "count-based (no LLM)": counted,
            "no profile": {},
        }
        if user in memories:
            profiles["llm (evolving)"] = genre_scores(memories[user].evolving)
            profiles["llm (static: first version)"] = genre_scores(memories[user].static)
        target = splits[user].target_session(stage)
        for name, genres in profiles.items():
            if genres is None:
                continue
            scored = score_user(target, dataset.items, genres)
            for metric, value in scored.items():
                per_profile[name][metric].append(value)
            sizes[name].append((sum(v > 0 for v in genres.values()), sum(v < 0 for v in genres.values())))
    study = ProfileStudy(
        dataset="ml-100k",
        stage=stage,
        users=len(chosen),
        model=llm.client.model if llm is not None else None,
        profile_sessions=profile_sessions,
        gap_minutes=gap_minutes,
    )
    for name in PROFILES:
        aucs = np.array([v for v in per_profile[name]["auc"] if v is not None])
        ndcgs = np.array([v for v in per_profile[name]["ndcg@10"] if v is not None])
        if not len(ndcgs):
            continue
        study.rows.append(
            ProfileRow(
                name=name,
                auc=float(aucs.mean()) if len(aucs) else float("nan"),
                auc_ci=bootstrap_ci(aucs) if len(aucs) else (float("nan"), float("nan")),
                auc_users=len(aucs),
                ndcg=float(ndcgs.mean()),
                ndcg_ci=bootstrap_ci(ndcgs),
                ndcg_users=len(ndcgs),
                interests=float(np.mean([s[0] for s in sizes[name]])),
                dislikes=float(np.mean([s[1] for s in sizes[name]])),
            )
        )
    for a, b in (
        ("llm (evolving)", "count-based (no LLM)"),
        ("llm (evolving)", "no profile"),
        ("count-based (no LLM)", "no profile"),
        ("llm (evolving)", "llm (static: first version)"),
    ):
        for metric in ("auc", "ndcg@10"):
            pairs = [
                (x, y)
                for x, y in zip(per_profile[a][metric], per_profile[b][metric], strict=False)
                if x is not None and y is not None
            ]
            if len(pairs) < 2:
                continue
            xs, ys = np.array(pairs).T
            p = float(stats.ttest_rel(xs, ys).pvalue) if np.any(xs != ys) else 1.0
            study.tests.append(
                {"a": a, "b": b, "metric": metric, "difference": float((xs - ys).mean()), "p_value": p, "n": len(pairs)}
            )
    if memories:
        updates = sum(m.evolving.version for m in memories.values())
        rejected = sum(len(p.rejected) for m in memories.values() for p in m.versions)
        study.rejected_per_100_updates = 100 * rejected / updates if updates else None
    study.seconds = time.perf_counter() - started
    return study


def write_report(study: ProfileStudy, out: Path) -> list[Path]:
    """profiles.json, profiles.md (``eval.report``) and a bar chart with intervals (profiles.png) in ``out``."""
    from driftrec.plots import metric_bars

    report_files(out, "profiles", study)
    plot = metric_bars(
        [(r.name, r.auc, r.auc_ci) for r in study.rows if r.auc_users],
        out / "profiles.png",
        f"Profile quality: liked vs disliked items of the next session ({study.users} users, "
        f"{study.model or 'no LLM'})",
        label="AUC (95 % bootstrap interval)",
    )
    return [out / "profiles.json", out / "profiles.md", plot]


def _last_sessions(events: Sequence[Interaction], gap_minutes: float, n: int) -> list[list[Interaction]]:
    from datetime import timedelta

    return [s.interactions for s in sessionize(events, timedelta(minutes=gap_minutes))][-n:]
