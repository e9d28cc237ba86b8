"""The learned ranking stage, measured: LightGBM LambdaMART over candidate features, trained on the
validation stage and applied to the test stage (leave-one-out, full ranking, the offline harness's
split), against fusion over the same candidate pool and the baselines.

Per stage the candidate sources and the feature builder are fitted on that stage's training log (no
user's target is in it); each user's pool is the union of every source's top ``pool``. Reported: the
pool's recall (the ceiling of any re-ranker), NDCG/HR with 95 % bootstrap intervals, the paired test of
the learned ranker against fusion and against the best baseline, feature importance, and ablations
(the ranker retrained without a group of features: ``without`` rows).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.llm_feature import LLMFeatureStudy, measure, profile_document
from driftrec.eval.llm_study import sampled_candidates
from driftrec.eval.metrics import DEFAULT_METRICS, accuracy, bootstrap_ci, per_user, significance
from driftrec.eval.protocols import UserSplit, first_users, leave_one_out, training_log
from driftrec.eval.report import write_report as report_files
from driftrec.eval.retrieval_study import ingest
from driftrec.eval.runner import K, leave_one_out_stage
from driftrec.eval.systems import check_systems, make_system
from driftrec.llm import LLM
from driftrec.ranking.features import FEATURES, SOURCES
from driftrec.ranking.learned import LearnedRanker, catalog_fingerprint
from driftrec.ranking.second_phase import learned_windows, score_windows
from driftrec.ranking.training import Pool, Target, build_pool, training_groups
from driftrec.records import safe_name
from driftrec.retrieval.store import ItemIndex

ABLATIONS: dict[str, tuple[str, ...]] = {
    "profile": ("genre_match_long", "genre_match_recent"),
    **{f"source {s}": tuple(f for f in (f"{s}_score", f"{s}_rrank") if f in FEATURES) for s in SOURCES},
    "popularity windows": tuple(f for f in FEATURES if f.startswith("pop_")),
    "fusion": ("fused_score", "fused_rrank", "sources"),
}


@dataclass
class SystemRow:
    name: str
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float]]


@dataclass
class RankerStudy:
    dataset: str
    users: int
    pool: int
    recall: dict[str, float]  # test stage: the pool, and each source alone
    systems: list[SystemRow]
    tests: dict[str, dict[str, float]]  # paired t-tests on ndcg@10
    card: dict[str, object]
    ablations: dict[str, dict[str, float]]  # without <group>: test ndcg@10 and its drop
    seconds: dict[str, float]
    baseline_training: dict[str, dict[str, object]] = field(default_factory=dict)  # e.g. SASRec's epochs
    sampled: list[SystemRow] = field(default_factory=list)  # 1+19: the target and 19 seeded unseen items
    sampled_first: dict[str, dict[str, float]] = field(default_factory=dict)  # the same, the first N users
    llm_feature: LLMFeatureStudy | None = None  # the served LLM's columns in a second phase (eval/llm_feature.py)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"Candidate pool recall@{self.pool} (test): union {self.recall['union']:.3f}; "
            + ", ".join(f"{s} {v:.3f}" for s, v in self.recall.items() if s != "union"),
            "",
            "| system | NDCG@10 [95% CI] | HR@10 [95% CI] | MRR@10 |",
            "|---|---|---|---|",
        ]
        for s in self.systems:
            n, h = s.ci95["ndcg@10"], s.ci95["hit_rate@10"]
            lines.append(
                f"| {s.name} | {s.metrics['ndcg@10']:.4f} [{n[0]:.3f}, {n[1]:.3f}] | "
                f"{s.metrics['hit_rate@10']:.4f} [{h[0]:.3f}, {h[1]:.3f}] | {s.metrics['mrr@10']:.4f} |"
            )
        lines += ["", "| learned vs | NDCG@10 difference | p (paired t) |", "|---|---|---|"]
        for other, t in self.tests.items():
            lines.append(f"| {other} | {t['difference']:+.4f} | {t['p_value']:.2g} |")
        lines += ["", "| without | NDCG@10 | change |", "|---|---|---|"] if self.ablations else []
        for group, a in self.ablations.items():
            lines.append(f"| {group} | {a['ndcg@10']:.4f} | {a['change']:+.4f} |")
        for name, report in self.baseline_training.items():
            lines += [
                "",
                f"{name}: best validation NDCG@10 {report['best_valid_ndcg10']} at epoch {report['best_epoch']} "
                f"of {report['epochs_run']} (early stopping), seed {report['seed']}, {report['seconds']} s",
            ]
        if self.sampled:
            lines += [
                "",
                f"1+19 sampled (the test item and 19 seeded random unseen items, {self.users} users):",
                "",
                "| order of the 20 | NDCG@10 [95% CI] | HR@10 |",
                "|---|---|---|",
            ]
            for s in self.sampled:
                n, hit = s.ci95["ndcg@10"], s.metrics["hit_rate@10"]
                lines.append(f"| {s.name} | {s.metrics['ndcg@10']:.4f} [{n[0]:.3f}, {n[1]:.3f}] | {hit:.4f} |")
            for first, row in self.sampled_first.items():
                lines.append(f"\n{first}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()))
        top = sorted(self.card["importance"].items(), key=lambda kv: -kv[1])[:8]  # type: ignore[union-attr]
        lines += ["", "Importance (gain share): " + ", ".join(f"{k} {v:.2f}" for k, v in top)]
        if self.llm_feature is not None:
            lines += ["", self.llm_feature.markdown()]
        return "\n".join(lines)


SAMPLED_FIRST = 150  # the model ladder's users (`driftrec eval llm --setting sampled --users 150`)
BLEND_WEIGHTS = tuple(round(w / 10, 1) for w in range(11))  # the LLM order's share, 0 (learned alone) to 1
BLEND_FOLDS = 5
FOLDS_MIN_USERS = 50  # the fewest users whose LLM answers the study cross-fits a second phase over


def llm_orders(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """A ``driftrec eval llm --setting sampled`` run's records (``*-test.jsonl``): user -> (the 20
    candidates as given, the LLM's order of them)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    orders: dict[str, tuple[list[str], list[str]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            orders[str(record["user"])] = (list(record["retrieval"]), list(record["llm"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {number}: not an LLM study record ({exc})") from None
    return orders


def blend(learned: Sequence[str], llm: Sequence[str], weight: float) -> list[str]:
    """Both orders of the same candidates by weighted rank: (1 - weight) * learned rank + weight * LLM
    rank; ties keep the learned order. An item the LLM left out ranks after all it placed."""
    rank = {item: n for n, item in enumerate(learned)}
    llm_rank = {item: n for n, item in enumerate(llm)}
    return sorted(learned, key=lambda i: ((1 - weight) * rank[i] + weight * llm_rank.get(i, len(llm)), rank[i]))


def cross_fitted_blend(
    targets: Mapping[str, str], learned: Mapping[str, list[str]], llm: Mapping[str, list[str]]
) -> tuple[dict[str, list[str]], list[float]]:
    """The LLM order as one more signal beside the learned stage, its weight never chosen on the users it
    is scored on: users in ``BLEND_FOLDS`` folds, each fold ranked with the weight best on the others
    (mean NDCG@10). Returns the blended orders and each fold's weight."""
    users = sorted(targets)
    ordered = {u: targets[u] for u in users}
    ndcg = {  # weight -> user -> NDCG@10 of the blend: each fold's choice is a mean over the other folds' users
        w: dict(zip(users, per_user(ordered, {u: blend(learned[u], llm[u], w) for u in users}, "ndcg@10"), strict=True))
        for w in BLEND_WEIGHTS
    }
    blended: dict[str, list[str]] = {}
    chosen: list[float] = []
    for held in (users[f::BLEND_FOLDS] for f in range(BLEND_FOLDS)):
        held_set = set(held)
        rest = [u for u in users if u not in held_set]
        weight = max(BLEND_WEIGHTS, key=lambda w: (sum(ndcg[w][u] for u in rest) / len(rest), -w))  # tie: less LLM
        chosen.append(weight)
        blended |= {u: blend(learned[u], llm[u], weight) for u in held}
    return blended, chosen


async def _sampled_orders(
    settings: Settings,
    index: ItemIndex,
    dataset: Dataset,
    splits: Mapping[str, UserSplit],
    chosen: Sequence[str],
    model: LearnedRanker,
) -> dict[str, dict[str, list[str]]]:
    """Each system's order of the same 20 candidates per user: the test item and 19 unseen items drawn
    exactly as the LLM study draws them (same seed per user), so the rows sit beside the model ladder's."""
    log = training_log(splits, "test")
    given = {
        u: [
            c.item.id
            for c in sampled_candidates(
                dataset,
                {e.item for e in splits[u].seen_before("test")},
                splits[u].target("test").item,
                f"{settings.llm.seed}:{u}",
            )
        ]
        for u in chosen
    }
    cases = {u: (splits[u].seen_before("test"), Target.next_event(splits[u].target("test"))) for u in chosen}
    pool = await build_pool(settings.retrieval, index, dataset.items, log, cases, model.card.pool, include=given)
    counts = Counter(e.item for e in log)
    learned, fusion = {}, {}
    for user, ids in given.items():
        position = {item: n for n, item in enumerate(pool.ids[user])}
        scores = model.scores(pool.rows[user])
        learned[user] = sorted(ids, key=lambda i: -scores[position[i]])
        fusion[user] = sorted(ids, key=lambda i: position[i])  # what no source proposed comes last, as given
    return {
        "random order (as given)": given,
        "popularity (training log)": {u: sorted(ids, key=lambda i: -counts[i]) for u, ids in given.items()},
        "driftrec-fusion (pool order)": fusion,
        "driftrec-learned": learned,
    }


def _llm_rows(
    recorded: Mapping[str, tuple[list[str], list[str]]],
    targets: Mapping[str, str],
    orders: Mapping[str, Mapping[str, list[str]]],
) -> dict[str, dict[str, float]]:
    """What the LLM's order adds to the learned stage on the recorded users' 1+19 candidates."""
    given = orders["random order (as given)"]
    users = [u for u in recorded if u in given]
    if not users:
        raise ValueError("the LLM records share no user with this study: run both on the same users")
    for user in users:
        if sorted(recorded[user][0]) != sorted(given[user]):
            raise ValueError(
                f"user {user}: the LLM records ordered other candidates than this study's 1+19 draw "
                "(another dataset, seed or catalog)"
            )
    here = {u: targets[u] for u in users}
    learned = {u: orders["driftrec-learned"][u] for u in users}
    llm = {u: recorded[u][1] for u in users}
    blended, weights = cross_fitted_blend(here, learned, llm)
    rows = {"driftrec-learned": learned, "LLM order (records)": llm, "learned + LLM (cross-fitted)": blended}
    ndcg = {name: accuracy(here, ranked, ["ndcg@10"])["ndcg@10"] for name, ranked in rows.items()}
    same = all(blended[u] == learned[u] for u in users)  # weight 0 everywhere: nothing to test (p would be NaN)
    p = 1.0 if same else significance(here, {"blend": blended, "learned": learned}, "ndcg@10")["blend"]["learned"]
    label = f"LLM records, {len(users)} users"
    return {
        f"{label}, NDCG@10": ndcg,
        f"{label}, blend vs learned": {
            "difference": ndcg["learned + LLM (cross-fitted)"] - ndcg["driftrec-learned"],
            "p (paired t)": p,
            **{f"LLM weight, fold {n}": w for n, w in enumerate(weights, start=1)},
        },
    }


async def run_ranker_study(
    settings: Settings,
    dataset: Dataset,
    *,
    users: int | None = None,
    pool: int = 100,
    baselines: Sequence[str] = ("most-popular", "item-knn", "bpr", "sasrec-ce"),
    ablate: bool = True,
    sampled: bool = True,
    stages: int = 5,
    llm_records: Path | None = None,
    llm: LLM | None = None,
    llm_users: int | None = None,
    llm_window: int = 20,
    llm_out: Path | None = None,
    llm_profile: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[RankerStudy, LearnedRanker]:
    """``llm_records``: a sampled LLM study's records; their users get two more 1+19 rows, the LLM's
    order and the learned order blended with it (weight cross-fitted over users: ``cross_fitted_blend``).
    ``llm``: a served LLM scores the learned stage's top ``llm_window`` of the first ``llm_users`` users,
    and a cross-fitted second phase measures its columns (``eval.llm_feature``; records resume from the
    folder ``llm_out``, one file per model and window); ``llm_profile``: a second call per user judges the
    same window from the user's count-based profile alone, and its columns are measured too."""
    say = progress or (lambda _: None)
    recorded = llm_orders(llm_records) if llm_records is not None else {}
    if recorded and not sampled:
        raise ValueError("llm_records need the 1+19 rows (sampled=True): the records order those candidates")
    check_systems(baselines)
    splits = leave_one_out(dataset)
    chosen = first_users(splits, users)
    index = await ingest(settings, dataset)
    catalog = catalog_fingerprint(dataset.items)
    # Training sees each user's history and validation item (never a test item): cut points from there.
    sequences = {u: [*splits[u].history, splits[u].valid] for u in chosen}
    started = time.perf_counter()
    examples = await training_groups(
        settings.retrieval, index, dataset.items, sequences, stages=stages, pool=pool, progress=say
    )
    pools_seconds = time.perf_counter() - started
    say("candidates and features, test stage")
    test_cases = {u: (splits[u].seen_before("test"), Target.next_event(splits[u].target("test"))) for u in chosen}
    test = await build_pool(settings.retrieval, index, dataset.items, training_log(splits, "test"), test_cases, pool)
    say(f"training LambdaMART on {len(examples)} examples")

    def train(features: Sequence[str] = FEATURES) -> LearnedRanker:
        return LearnedRanker.train(
            examples.older, catalog, stop_groups=examples.latest, features=features, pool=pool, stages=stages
        )

    model = await asyncio.to_thread(train)
    targets = {u: test.targets[u] for u in chosen}
    rankings: dict[str, dict[str, list[str]]] = {
        "driftrec-learned": test.ranked(model, K),
        "driftrec-fusion (same pool)": {u: ids[:K] for u, ids in test.ids.items()},
    }
    baseline_training: dict[str, dict[str, object]] = {}
    stage = leave_one_out_stage(settings, dataset, "test", users)
    stage.index = index
    for name in baselines:
        say(f"baseline {name}")
        system = make_system(name)
        await system.fit(stage)
        rankings[name] = await system.rank(stage, K)
        if (report := system.report()) is not None:  # epochs, early stopping, seed
            baseline_training[name] = report
    systems = []
    for name, ranked in rankings.items():
        metrics = accuracy(targets, ranked, DEFAULT_METRICS)
        ci = {m: bootstrap_ci(per_user(targets, ranked, m)) for m in ("ndcg@10", "hit_rate@10")}
        systems.append(SystemRow(name, metrics, ci))
    learned = rankings["driftrec-learned"]
    ndcg = {s.name: s.metrics["ndcg@10"] for s in systems}
    tests = {}  # against every baseline (each seed of one counts as its own), the strongest first
    compared = sorted((b for b in baselines if b != "random"), key=lambda b: -ndcg[b])
    for other in ["driftrec-fusion (same pool)", *compared]:
        p = significance(targets, {"learned": learned, "other": rankings[other]}, "ndcg@10")["learned"]["other"]
        tests[other] = {"difference": round(ndcg["driftrec-learned"] - ndcg[other], 4), "p_value": p}
    ablations = {}
    if ablate:
        for group, dropped in ABLATIONS.items():
            say(f"ablation: without {group}")
            kept = [f for f in FEATURES if f not in dropped]
            reduced = await asyncio.to_thread(train, kept)
            score = accuracy(targets, test.ranked(reduced, K), ["ndcg@10"])["ndcg@10"]
            ablations[group] = {"ndcg@10": score, "change": round(score - ndcg["driftrec-learned"], 4)}
    sampled_rows: list[SystemRow] = []
    sampled_first: dict[str, dict[str, float]] = {}
    if sampled:
        say("1+19 sampled candidates")
        orders = await _sampled_orders(settings, index, dataset, splits, chosen, model)
        first = chosen[:SAMPLED_FIRST]
        for name, ranked in orders.items():
            metrics = accuracy(targets, ranked, DEFAULT_METRICS)
            ci = {m: bootstrap_ci(per_user(targets, ranked, m)) for m in ("ndcg@10", "hit_rate@10")}
            sampled_rows.append(SystemRow(name, metrics, ci))
        # the model ladder's users: these rows sit beside its LLM orders (docs/results.md)
        first_targets = {u: targets[u] for u in first}
        first_orders = {name: {u: ranked[u] for u in first} for name, ranked in orders.items()}
        sampled_first[f"first {len(first)} users, NDCG@10"] = {
            name: accuracy(first_targets, ranked, ["ndcg@10"])["ndcg@10"] for name, ranked in first_orders.items()
        }
        pair = {k: first_orders[k] for k in ("driftrec-learned", "popularity (training log)")}
        p = significance(first_targets, pair, "ndcg@10")["driftrec-learned"]["popularity (training log)"]
        sampled_first[f"first {len(first)} users, learned vs popularity"] = {"p (paired t)": p}
        if recorded:
            sampled_first |= _llm_rows(recorded, targets, orders)
    llm_feature = None
    if llm is not None:
        llm_feature = await _llm_feature(
            llm, dataset, splits, test, model, chosen[:llm_users], targets, llm_window, llm_out, say, llm_profile
        )
    recall = {"union": test.recall()} | {s: test.source_hits[s] / max(1, len(chosen)) for s in SOURCES}
    study = RankerStudy(
        dataset=dataset.name,
        users=len(chosen),
        pool=pool,
        recall=recall,
        systems=systems,
        tests=tests,
        card=asdict(model.card),
        ablations=ablations,
        baseline_training=baseline_training,
        sampled=sampled_rows,
        sampled_first=sampled_first,
        llm_feature=llm_feature,
        seconds={
            "train_pools": round(pools_seconds, 1),
            "test_pool": round(test.seconds, 1),
            "train": model.card.seconds,
        },
    )
    return study, model


async def _llm_feature(
    llm: LLM,
    dataset: Dataset,
    splits: Mapping[str, UserSplit],
    test: Pool,
    model: LearnedRanker,
    users: Sequence[str],
    targets: Mapping[str, str | Sequence[str]],
    window: int,
    out: Path | None,
    say: Callable[[str], None],
    profile: bool = False,
) -> LLMFeatureStudy:
    """The learned stage's top ``window`` per user, scored by the LLM (and from the user's profile alone, with
    ``profile``), measured in a second phase."""
    learned: dict[str, list[str]] = {}
    scores: dict[str, dict[str, float]] = {}
    for user in users:
        learned[user], scores[user] = learned_windows(
            test.ids[user], model.scores(test.rows[user]), len(test.ids[user])
        )
    windows = {u: learned[u][:window] for u in users}

    def counted(label: str) -> Callable[[str], None]:
        done = 0

        def tick(message: str) -> None:
            nonlocal done
            done += 1
            say(f"{label}: {done}/{len(users)} users ({message})")

        return tick

    def records_file(kind: str) -> Path | None:
        return None if out is None else out / f"{kind}-{safe_name(llm.client.model)}-w{window}.jsonl"

    histories = {u: splits[u].seen_before("test") for u in users}
    records = await score_windows(
        llm, histories, dataset.items, windows, out=records_file("llm-feature"), progress=counted("LLM feature")
    )
    answered = {u: r for u, r in records.items() if r.logprobs}
    profiles = None
    if profile:
        documents = {u: profile_document(histories[u], dataset.items) for u in users}
        judged = await score_windows(
            llm,
            histories,
            dataset.items,
            windows,
            out=records_file("llm-profile"),
            progress=counted("LLM from the profile"),
            profiles=documents,
        )
        profiles = {u: r for u, r in judged.items() if r.logprobs}
        answered = {u: r for u, r in answered.items() if u in profiles}  # users with both judgements
    if len(answered) < FOLDS_MIN_USERS:
        raise ValueError(f"the LLM answered for {len(answered)} users: too few to cross-fit a second phase")
    return measure(answered, learned, scores, targets, window=window, model=llm.client.model, profiles=profiles)


def write_report(study: RankerStudy, out_dir: Path, name: str = "ranker") -> Path:
    """ranker.json and ranker.md (``eval.report``)."""
    return report_files(out_dir, name, study)
