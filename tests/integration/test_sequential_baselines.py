"""SASRec and GRU4Rec as strong baselines must be (issue 14): full cross-entropy, early stopping on
validation NDCG@10 from held-out events the evaluated stage never reveals, the kept weights those of the
best epoch — on real MovieLens-100K (all users; a short input, a short patience and an epoch cap keep each
near a minute)."""

from __future__ import annotations

import numpy as np
import pytest

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.baselines import BASELINES, MostPopular, TrainData
from driftrec.eval.gru4rec import GRU4RecCE
from driftrec.eval.protocols import leave_one_out
from driftrec.eval.runner import leave_one_out_stage
from driftrec.eval.sasrec import SASRecCE
from driftrec.eval.sequential import NextItemCE
from driftrec.eval.systems import StageData, top_unseen

QUICK = {  # the fastest to learn of each (a short input, an epoch cap)
    "sasrec-ce": lambda: SASRecCE(max_len=50, dropout=0.2, max_epochs=30, patience=3, seed=1),
    "gru4rec-ce": lambda: GRU4RecCE(max_len=50, learning_rate=3e-3, max_epochs=15, patience=3, seed=1),
}


@pytest.fixture(scope="module", params=list(QUICK))
def fitted(request: pytest.FixtureRequest, settings: Settings) -> tuple[NextItemCE, TrainData, dict, StageData]:
    dataset = load_movielens_100k(settings.cache_dir)
    stage = leave_one_out_stage(settings, dataset, "test")  # every user
    data = stage.train_data()
    model = QUICK[request.param]()
    assert model.name == request.param
    return model.fit(data), data, leave_one_out(dataset), stage


def test_training_stops_early_and_keeps_the_best_epoch(fitted) -> None:
    model, data, _, _ = fitted
    report = model.report
    assert report.epochs_run == len(report.curve) and report.seed == 1
    assert report.best_epoch == int(np.argmax(report.curve)) + 1
    assert report.best_valid_ndcg10 == max(report.curve)
    cap = model.max_epochs
    assert report.epochs_run < cap or report.best_epoch >= cap - 2  # stopped by patience, or still improving at the cap
    # the kept weights are the best epoch's: its validation figure comes back when measured again
    held_out = []
    for events in data.sequences.values():
        encoded = model._encode([e.item for e in events])
        if len(encoded) >= 2:
            held_out.append((encoded[:-1], encoded[-1]))
    assert abs(model._ndcg10(held_out) - report.best_valid_ndcg10) < 1e-4


def test_it_learns_more_than_popularity_on_the_test_stage(fitted) -> None:
    model, data, splits, stage = fitted
    users = list(stage.cases)
    targets = {u: splits[u].test.item for u in users}

    def hits(ranked: dict[str, list[str]]) -> int:
        return sum(targets[u] in ranked[u] for u in users)

    ours = top_unseen(model, stage, 20)
    assert all(not set(ranked) & {e.item for e in splits[u].seen_before("test")} for u, ranked in ours.items())
    popular = top_unseen(MostPopular().fit(data), stage, 20)
    assert hits(ours) > hits(popular)
    assert BASELINES[model.name] is type(model)
