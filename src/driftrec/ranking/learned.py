"""The learned ranking stage: LightGBM LambdaMART over per-candidate features (ranking/features.py).

Trained offline on the validation stage (each user's candidates, the held-out next item as the one
relevant), with early stopping on a share of those users; saved as a LightGBM text model beside a JSON
card (feature names, catalog fingerprint, training figures). ``load`` refuses a file made for another
feature list or another catalog (RankerFileError, with the reason), so features are never silently
misaligned; the caller then keeps the fusion order and says why.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from driftrec.ranking.features import FEATURES

FORMAT = 1


class RankerFileError(ValueError):
    """A ranker file that is missing, unreadable, or made for other features or another catalog."""


def catalog_fingerprint(item_ids: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for item in sorted(item_ids):
        digest.update(item.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class RankerCard:
    """What a saved ranker was made from, and how training went."""

    features: list[str]
    catalog: str  # fingerprint of the item ids it was trained with
    format: int = FORMAT
    pool: int = 100  # each source's top-n the pool was built from (serving builds it the same way)
    stages: int = 0  # cut points per user the examples came from
    trained_at: float = field(default_factory=time.time)
    users: int = 0  # training examples (a user at a cut point, their target among the candidates)
    rows: int = 0
    best_iteration: int = 0
    valid_ndcg10: float = 0.0  # on the early-stopping users
    seconds: float = 0.0
    params: dict[str, object] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)  # gain, normalized to sum 1
    grid: list[dict[str, object]] = field(default_factory=list)  # every setting tried, its validation NDCG@10


PARAMS: dict[str, object] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambdarank_truncation_level": 20,
    "num_threads": 2,
    "seed": 7,
    "deterministic": True,
    # LightGBM otherwise picks row- or column-wise histograms by timing both at start: under load the pick can
    # change and with it the sums' order, so one training set gave three models (NDCG@10 0.1343-0.1359) on
    # one day; row-wise is what it picks on an idle machine here, and the faster (LightGBM's docs ask for
    # one of the two whenever deterministic is set)
    "force_row_wise": True,
    "verbosity": -1,
}
# Tried in turn; the one with the best NDCG@10 on the early-stopping users (never a test target) is kept.
# A fourth setting (31 leaves, 50 rows per leaf, no L2) was the worst of the four in all five recorded studies
# (0.159-0.167 against 0.168-0.177) and cost a quarter of the training: dropped (2026-12-04).
GRID: tuple[dict[str, object], ...] = (
    {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 100, "lambda_l2": 1.0, "feature_fraction": 0.8},
    {"learning_rate": 0.03, "num_leaves": 15, "min_data_in_leaf": 200, "lambda_l2": 10.0, "feature_fraction": 0.7},
    {"learning_rate": 0.03, "num_leaves": 7, "min_data_in_leaf": 400, "lambda_l2": 10.0, "feature_fraction": 0.7},
)


class LearnedRanker:
    def __init__(self, booster: object, card: RankerCard):
        self.booster = booster
        self.card = card
        self._columns = [FEATURES.index(name) for name in card.features]

    @classmethod
    def train(
        cls,
        groups: Sequence[tuple[np.ndarray, np.ndarray]],
        catalog: str,
        *,
        features: Sequence[str] = FEATURES,
        stop_groups: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        stop_share: float = 0.2,
        rounds: int = 1000,
        params: dict[str, object] | None = None,
        pool: int = 100,
        stages: int = 0,
    ) -> LearnedRanker:
        """``groups``: one (rows, labels) per example, rows over ``FEATURES``; groups with no positive are
        skipped (nothing to learn from). ``stop_groups`` (else the last ``stop_share`` of ``groups``) decide
        when to stop and which of ``GRID`` (or the given ``params``) to keep: validation, never a test
        target; they are not trained on."""
        import lightgbm as lgb

        started = time.perf_counter()

        def usable(part: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
            return [(x, y) for x, y in part if y.any() and len(y) > 1]

        useful = usable(groups)
        stop = usable(stop_groups or [])
        if len(useful) + len(stop) < 10:
            raise ValueError(
                f"only {len(useful) + len(stop)} users with their target among the candidates: too few to train"
            )
        columns = [FEATURES.index(name) for name in features]
        if stop:
            fit = useful
        else:
            cut = max(1, int(len(useful) * (1 - stop_share)))
            fit, stop = useful[:cut], useful[cut:]

        def dataset(part: list[tuple[np.ndarray, np.ndarray]], reference: object = None) -> object:
            x = np.vstack([g[0][:, columns] for g in part])
            y = np.concatenate([g[1] for g in part])
            return lgb.Dataset(
                x,
                y,
                group=[len(g[1]) for g in part],
                feature_name=list(features),
                reference=reference,
                free_raw_data=False,
            )

        train_set = dataset(fit)
        stop_set = dataset(stop, train_set)
        tried: list[tuple[float, dict[str, object], object]] = []
        for candidate in [params] if params is not None else GRID:
            settings = {**PARAMS, **candidate}
            model = lgb.train(
                settings,
                train_set,
                num_boost_round=rounds,
                valid_sets=[stop_set],
                callbacks=[lgb.early_stopping(50, verbose=False)],
            )
            tried.append((float(model.best_score["valid_0"]["ndcg@10"]), settings, model))
        best_ndcg, settings, booster = max(tried, key=lambda t: t[0])
        gain = booster.feature_importance(importance_type="gain")
        total = float(gain.sum()) or 1.0
        card = RankerCard(
            features=list(features),
            catalog=catalog,
            pool=pool,
            stages=stages,
            users=len(fit) + len(stop),
            rows=int(sum(len(g[1]) for g in (*fit, *stop))),
            best_iteration=int(booster.best_iteration or rounds),
            valid_ndcg10=round(best_ndcg, 4),
            grid=[
                {"params": {k: t[1][k] for k in GRID[0] if k in t[1]}, "valid_ndcg10": round(t[0], 4)} for t in tried
            ],
            seconds=round(time.perf_counter() - started, 2),
            params={k: v for k, v in settings.items() if k != "eval_at"},
            importance={name: round(float(g) / total, 4) for name, g in zip(features, gain, strict=True)},
        )
        return cls(booster, card)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """One score per row (rows over ``FEATURES``; higher ranks first)."""
        if len(rows) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(rows[:, self._columns], num_iteration=self.card.best_iteration))

    def save(self, directory: Path) -> Path:
        """``ranker.txt`` (the LightGBM model) and ``ranker.json`` (its card), written then renamed."""
        directory.mkdir(parents=True, exist_ok=True)
        model, card = directory / "ranker.txt", directory / "ranker.json"
        self.booster.save_model(str(model) + ".tmp", num_iteration=self.card.best_iteration)
        card.with_suffix(".json.tmp").write_text(json.dumps(asdict(self.card), indent=2))
        Path(str(model) + ".tmp").replace(model)
        card.with_suffix(".json.tmp").replace(card)
        return model

    @classmethod
    def load(cls, directory: Path, catalog: str) -> LearnedRanker:
        """The ranker saved in ``directory``, checked against this build's features and ``catalog``."""
        import lightgbm as lgb

        model, card_path = directory / "ranker.txt", directory / "ranker.json"
        if not model.exists() or not card_path.exists():
            raise RankerFileError(f"no ranker in {directory} (train one: driftrec ranker train)")
        try:
            card = RankerCard(**json.loads(card_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise RankerFileError(f"{card_path} is not a ranker card: {exc}") from exc
        if card.format != FORMAT:
            raise RankerFileError(f"{card_path}: format {card.format}, this driftrec reads {FORMAT}; retrain")
        unknown = [f for f in card.features if f not in FEATURES]
        if unknown:
            raise RankerFileError(f"{card_path}: trained on features this driftrec does not make: {unknown}; retrain")
        if card.catalog != catalog:
            raise RankerFileError(
                f"{card_path}: trained on another catalog (fingerprint {card.catalog}, serving {catalog}); retrain"
            )
        try:
            booster = lgb.Booster(model_file=str(model))
        except lgb.basic.LightGBMError as exc:
            raise RankerFileError(f"{model} is not a LightGBM model: {exc}") from exc
        if booster.feature_name() != card.features:
            raise RankerFileError(f"{model}: its features {booster.feature_name()} disagree with its card")
        return cls(booster, card)
