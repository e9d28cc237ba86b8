"""The second phase: the served LLM's judgement of the learned stage's top window, weighed by LambdaMART.

The learned stage orders the pool; its top ``window`` is shown once to the served LLM through the
verbalizer (the user's latest items first, the stable head vLLM's prefix cache keeps, the candidates
last). Each candidate gets two columns beside its learned score and rank: its label's probability among
the window's labels (log-softmax; NaN when the server gave none) and its place in the LLM's order. A small
LambdaMART over those four re-orders the window; it is monotone in every column, so it can weigh the two
judgements but never undo either. The rest of the pool keeps the learned order.

The same pieces serve three callers: ``eval.llm_feature`` measures the columns cross-fitted over users,
``train_second_phase`` trains the phase a Recommender serves (``driftrec ranker train --second-phase-users``),
and ``Reranker`` applies it per request. A saved phase names the learned ranker it weighs and the served
model it was trained on; ``load`` refuses any other (RankerFileError), so a stale phase is never applied.
The prompt has no profile or session summaries: a replayed profile as of each training cut would cost three
LLM sessions per user, and the current one knows the target.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from driftrec.config import RetrievalSettings
from driftrec.llm import LLM, LLMError
from driftrec.models import Candidate, Interaction, Item, Provenance
from driftrec.prompts import PromptError
from driftrec.ranking.context import RankContext, build_context
from driftrec.ranking.learned import LearnedRanker, RankerCard, RankerFileError
from driftrec.ranking.training import build_pool, cut_points
from driftrec.ranking.verbalizer import rank_verbalizer
from driftrec.records import append_record, read_records
from driftrec.retrieval.store import ItemIndex

COLUMNS = ("learned_score", "learned_rank", "llm_logprob", "llm_rank")
WITHOUT_LLM = COLUMNS[:2]
# The LLM's judgement of the same window from the user's profile alone (no items): measured by
# ``eval.llm_feature`` (``driftrec eval ranker --llm-profile``), not served.
PROFILE_COLUMNS = ("profile_logprob", "profile_rank")
# The second phase may not undo either judgement, only weigh them: a higher learned score or LLM probability
# never lowers a candidate, a later place never raises it. Unconstrained, the without-LLM twin (two views of
# one order) learned steps that reshuffled the learned order and lost 0.008 NDCG@10 to it (SmolLM2 run).
MONOTONE = {
    "learned_score": 1,
    "learned_rank": -1,
    "llm_logprob": 1,
    "llm_rank": -1,
    "profile_logprob": 1,
    "profile_rank": -1,
}
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
RECENT_ITEMS = 10  # the latest items the prompt shows, in training and in serving alike
FORMAT = 1


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


def normalized(logprobs: Mapping[str, float]) -> dict[str, float]:
    """Log-softmax over the labels that got a finite logprob: each label's log-probability among the window's."""
    finite = {k: v for k, v in logprobs.items() if math.isfinite(v)}
    if not finite:
        return {}
    top = max(finite.values())
    total = top + math.log(sum(math.exp(v - top) for v in finite.values()))
    return {k: v - total for k, v in finite.items()}


def judgement_columns(record: LLMScores, shown: Sequence[str]) -> np.ndarray:
    """Two columns per item of ``shown``: its label's log-probability in ``record`` (NaN when it got none)
    and its place in the LLM's order (after the last when the LLM did not order it)."""
    llm_rank = {item: n for n, item in enumerate(record.order, start=1)}
    return np.array(
        [[record.logprobs.get(item, np.nan), llm_rank.get(item, len(shown) + 1)] for item in shown], np.float64
    ).reshape(len(shown), 2)


def window_rows(record: LLMScores, learned_scores: Mapping[str, float]) -> np.ndarray:
    """One row per shown item over ``COLUMNS``, in the shown (learned) order."""
    learned = np.array([[learned_scores[item], n] for n, item in enumerate(record.shown, start=1)], np.float64)
    return np.hstack([learned.reshape(len(record.shown), 2), judgement_columns(record, record.shown)])


def fit(
    rows: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    columns: Sequence[str],
    layout: Sequence[str] = COLUMNS,
) -> tuple[Any, int, list[int]]:
    """LambdaMART on ``columns`` of the given users' windows (``rows`` laid out as ``layout``), early stopping
    on every fifth of them. Returns the booster, its best iteration and the indexes of the users it stopped on."""
    import lightgbm as lgb

    use = [list(layout).index(c) for c in columns]
    stop = sorted(set(range(0, len(rows), 5)))
    train = [n for n in range(len(rows)) if n not in set(stop)]

    def dataset(members: Sequence[int], reference: object = None) -> object:
        x = np.vstack([rows[n][:, use] for n in members])
        y = np.concatenate([labels[n] for n in members])
        return lgb.Dataset(x, y, group=[len(rows[n]) for n in members], feature_name=list(columns), reference=reference)

    fit_set = dataset(train)
    booster = lgb.train(
        {**PARAMS, "monotone_constraints": [MONOTONE[c] for c in columns]},
        fit_set,
        num_boost_round=500,
        valid_sets=[dataset(stop, fit_set)],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    return booster, max(1, booster.best_iteration), stop


def prompt_context(request: RankContext, shown: Sequence[Candidate]) -> RankContext:
    """The context the phase's prompt is rendered from: the latest items and the window, nothing else —
    as in training (the request's profile, session summaries and query are left out)."""
    return replace(
        request,
        candidates=list(shown),
        profile=None,
        profile_text="",
        sessions=(),
        themes=(),
        recent=list(request.recent)[-RECENT_ITEMS:],
        query=None,
    )


async def score_windows(
    llm: LLM,
    histories: Mapping[str, Sequence[Interaction]],
    catalog: Mapping[str, Item],
    windows: Mapping[str, Sequence[str]],
    *,
    out: Path | None = None,
    concurrency: int = 2,
    progress: Callable[[str], None] | None = None,
    profiles: Mapping[str, str] | None = None,
) -> dict[str, LLMScores]:
    """Ask the LLM about each user's window (``histories``: what they did before it); resumable via ``out``.
    A user whose call fails is returned with no logprobs and not recorded: the next run asks again. With
    ``profiles`` (user -> profile document) the prompt shows the user's profile instead of their latest items:
    the LLM judges the window by the profile alone."""
    done = await asyncio.to_thread(read_records, out, _scores, _user) if out is not None else {}
    todo = [u for u in windows if u not in done]
    semaphore = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def one(user: str) -> LLMScores:
        shown = [
            Candidate(item=catalog[i], score=0.0, provenance=[Provenance(source="learned", score=0.0, rank=r)])
            for r, i in enumerate(windows[user], start=1)
        ]
        context = build_context(  # the latest items, or (``profiles``) the profile and no items
            user,
            shown,
            10,
            history=histories[user],
            catalog=catalog,
            profile_text=profiles[user] if profiles is not None else "",
            recent_items=0 if profiles is not None else RECENT_ITEMS,
        )
        async with semaphore:
            started = time.perf_counter()
            try:
                reply = await rank_verbalizer(llm, context, shown, window=len(shown))
            except (LLMError, PromptError) as exc:
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


def _scores(fields: dict[str, Any]) -> LLMScores:
    return LLMScores(**fields)


def _user(record: LLMScores) -> str:
    return record.user


def ranker_identity(card: RankerCard) -> str:
    """Which learned ranker a phase weighs the scores of: its catalog and the moment it was trained."""
    return f"{card.catalog}@{card.trained_at:.6f}"


def _ndcg10(order: Sequence[str], targets: set[str]) -> float:
    gains = sum(1.0 / math.log2(n + 2) for n, item in enumerate(order[:10]) if item in targets)
    ideal = sum(1.0 / math.log2(n + 2) for n in range(min(10, len(targets))))
    return gains / ideal if ideal else 0.0


@dataclass
class SecondPhaseCard:
    """What a saved second phase weighs, with which model, and how it did on its early-stopping users."""

    model: str  # the served model whose log-probabilities it was trained on
    ranker: str  # ``ranker_identity`` of the learned ranker whose scores it weighs
    window: int
    columns: list[str] = field(default_factory=lambda: list(COLUMNS))
    format: int = FORMAT
    trained_at: float = field(default_factory=time.time)
    users: int = 0  # windows with their target among them
    best_iteration: int = 0
    stop_users: int = 0
    stop_ndcg10: dict[str, float] = field(default_factory=dict)  # "learned order" and "second phase"
    importance: dict[str, float] = field(default_factory=dict)  # gain share
    seconds: float = 0.0


class SecondPhase:
    def __init__(self, booster: Any, card: SecondPhaseCard):
        self.booster = booster
        self.card = card

    @classmethod
    def train(
        cls,
        records: Mapping[str, LLMScores],
        learned_scores: Mapping[str, Mapping[str, float]],
        targets: Mapping[str, set[str]],
        *,
        model: str,
        ranker: str,
        window: int,
    ) -> SecondPhase:
        """On every user whose window holds their target and whose LLM call answered."""
        started = time.perf_counter()
        users = [u for u in sorted(records) if records[u].logprobs and targets[u] & set(records[u].shown)]
        if len(users) < 10:
            raise ValueError(f"only {len(users)} users with their target in the window and an LLM answer: too few")
        rows = [window_rows(records[u], learned_scores[u]) for u in users]
        labels = [np.array([float(i in targets[u]) for i in records[u].shown]) for u in users]
        booster, best, stop = fit(rows, labels, COLUMNS)
        phase = cls(booster, SecondPhaseCard(model=model, ranker=ranker, window=window, best_iteration=best))
        stopped = [users[n] for n in stop]
        phase.card.stop_users = len(stopped)
        phase.card.stop_ndcg10 = {
            "learned order": round(float(np.mean([_ndcg10(records[u].shown, targets[u]) for u in stopped])), 4),
            "second phase": round(
                float(np.mean([_ndcg10(phase.order(records[u], learned_scores[u]), targets[u]) for u in stopped])), 4
            ),
        }
        gain = np.asarray(booster.feature_importance("gain", iteration=best), np.float64)
        share = gain / gain.sum() if gain.sum() > 0 else gain
        phase.card.importance = {c: round(float(g), 4) for c, g in zip(COLUMNS, share, strict=True)}
        phase.card.users = len(users)
        phase.card.seconds = round(time.perf_counter() - started, 2)
        return phase

    def order(self, record: LLMScores, learned_scores: Mapping[str, float]) -> list[str]:
        """The window re-ordered (ties keep the learned order)."""
        scores = self.booster.predict(window_rows(record, learned_scores), num_iteration=self.card.best_iteration)
        return [record.shown[n] for n in np.argsort(-np.asarray(scores), kind="stable")]

    def save(self, directory: Path) -> Path:
        """``second-phase.txt`` (the LightGBM model) and ``second-phase.json`` (its card), written then renamed."""
        directory.mkdir(parents=True, exist_ok=True)
        model, card = directory / "second-phase.txt", directory / "second-phase.json"
        self.booster.save_model(str(model) + ".tmp", num_iteration=self.card.best_iteration)
        Path(str(card) + ".tmp").write_text(json.dumps(asdict(self.card), indent=2))
        Path(str(model) + ".tmp").replace(model)
        Path(str(card) + ".tmp").replace(card)
        return model

    @staticmethod
    def saved(directory: Path) -> bool:
        return (directory / "second-phase.json").exists()

    @staticmethod
    def remove(directory: Path) -> None:
        """The card first: a card without its model is refused at load, a model without its card ignored."""
        for name in ("second-phase.json", "second-phase.txt"):
            (directory / name).unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path, *, ranker: str, model: str) -> SecondPhase:
        """The phase saved in ``directory``, checked against the learned ranker in use and the served model."""
        import lightgbm as lgb

        path, card_path = directory / "second-phase.txt", directory / "second-phase.json"
        try:
            card = SecondPhaseCard(**json.loads(card_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise RankerFileError(f"{card_path} is not a second-phase card: {exc}") from exc
        if card.format != FORMAT:
            raise RankerFileError(f"{card_path}: format {card.format}, this driftrec reads {FORMAT}; retrain")
        if card.columns != list(COLUMNS):
            raise RankerFileError(f"{card_path}: columns {card.columns}, this driftrec makes {list(COLUMNS)}; retrain")
        if card.ranker != ranker:
            raise RankerFileError(
                f"{card_path}: made for another learned ranker ({card.ranker}, serving {ranker}); retrain it "
                "with `driftrec ranker train --second-phase-users N`"
            )
        if card.model != model:
            raise RankerFileError(f"{card_path}: trained on {card.model!r}'s judgements, the served model is {model!r}")
        try:
            booster = lgb.Booster(model_file=str(path))
        except (lgb.basic.LightGBMError, OSError) as exc:
            raise RankerFileError(f"{path} is not a LightGBM model: {exc}") from exc
        if booster.feature_name() != card.columns:
            raise RankerFileError(f"{path}: its columns {booster.feature_name()} disagree with its card")
        return cls(booster, card)


def learned_windows(pool_ids: Sequence[str], scores: np.ndarray, window: int) -> tuple[list[str], dict[str, float]]:
    """The learned stage's top ``window`` of one pool (ties keep pool order) and their scores."""
    order = np.argsort(-scores, kind="stable")[:window]
    return [pool_ids[n] for n in order], {pool_ids[n]: float(scores[n]) for n in order}


async def train_second_phase(
    llm: LLM,
    ranker: LearnedRanker,
    retrieval: RetrievalSettings,
    index: ItemIndex,
    catalog: Mapping[str, Item],
    sequences: Mapping[str, Sequence[Interaction]],
    *,
    users: int,
    window: int = 20,
    pool: int = 100,
    progress: Callable[[str], None] | None = None,
) -> SecondPhase:
    """A phase trained on the first ``users`` users' last events, which ``ranker`` must not have trained on:
    the pool at each user's last cut (sources fitted on everyone's events before their own cut), the ranker's
    top ``window``, one LLM call each."""
    cases, log = cut_points(sequences, 0)
    chosen = {u: cases[u] for u in list(cases)[:users]}
    if progress:
        progress(f"second phase: candidates of {len(chosen)} users")
    built = await build_pool(retrieval, index, catalog, log, chosen, pool)
    windows: dict[str, list[str]] = {}
    scores: dict[str, dict[str, float]] = {}
    for user, ids in built.ids.items():
        windows[user], scores[user] = learned_windows(ids, ranker.scores(built.rows[user]), window)
    asked = 0

    def tick(_: str) -> None:
        nonlocal asked
        asked += 1
        if progress:
            progress(f"second phase: LLM {asked}/{len(windows)}")

    records = await score_windows(llm, {u: h for u, (h, _) in chosen.items()}, catalog, windows, progress=tick)
    targets = {u: set(t.items) for u, (_, t) in chosen.items()}
    return await asyncio.to_thread(
        SecondPhase.train,
        records,
        scores,
        targets,
        model=llm.client.model,
        ranker=ranker_identity(ranker.card),
        window=window,
    )
