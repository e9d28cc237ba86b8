"""Baselines: the bar driftrec has to clear, trained on exactly the split driftrec sees.

Random and most-popular are written here (a line each); BPR and SASRec are Cornac's implementations (a
maintained comparative framework); item-KNN is ours (Cornac's predicts ratings); ``sasrec-ce`` and ``gru4rec-ce``
are SASRec and GRU4Rec trained with full cross-entropy and early stopping (driftrec.eval.sasrec,
driftrec.eval.gru4rec). All are fitted on each stage's
training log (``Ranker``, driftrec.eval.ranker_base); every one scores the whole catalog for a user, and
the harness removes seen items and keeps the top k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from driftrec.eval.gru4rec import GRU4RecCE
from driftrec.eval.ranker_base import Ranker, TrainData
from driftrec.eval.sasrec import SASRecCE


class RandomRanker(Ranker):
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, data: TrainData) -> RandomRanker:
        self.n = len(data.catalog)
        return self

    def score(self, user: str, history: Sequence[str]) -> np.ndarray:
        digest = int.from_bytes(user.encode()[:8].ljust(8, b"\0"), "little")  # stable across processes
        return np.random.default_rng([self.seed, digest]).random(self.n)


class MostPopular(Ranker):
    name = "most-popular"

    def fit(self, data: TrainData) -> MostPopular:
        index = {item: i for i, item in enumerate(data.catalog)}
        self.counts = np.zeros(len(data.catalog))
        for events in data.sequences.values():
            for event in events:
                self.counts[index[event.item]] += 1
        return self

    def score(self, user: str, history: Sequence[str]) -> np.ndarray:
        return self.counts


class _Cornac(Ranker):
    """Adapter: Cornac models on implicit feedback (every interaction counts as 1)."""

    def _uir(self, data: TrainData) -> list[tuple[str, str, float]]:
        return [(u, e.item, 1.0) for u, events in data.sequences.items() for e in events]

    def _align(self, data: TrainData, iid_map: Mapping[str, int]) -> None:
        self.catalog = data.catalog
        self.catalog_pos = np.array([iid_map.get(item, -1) for item in data.catalog])

    def _expand(self, model_scores: np.ndarray) -> np.ndarray:
        """Cornac scores its own item index; items it never saw get -inf."""
        out = np.full(len(self.catalog), -np.inf)
        known = self.catalog_pos >= 0
        out[known] = np.asarray(model_scores, dtype=float).ravel()[self.catalog_pos[known]]
        return out


class ItemKNN(Ranker):
    """Implicit item-KNN for top-N (Sarwar et al. 2001; Deshpande & Karypis 2004): an item's score is the
    sum of its cosine similarities to the user's items, keeping each item's ``k`` nearest neighbours.

    Written here because Cornac's ItemKNN predicts ratings (a similarity-weighted *average*), which on
    implicit feedback gives every item the same score.
    """

    name = "item-knn"

    def __init__(self, k: int = 100):
        self.k = k

    def fit(self, data: TrainData) -> ItemKNN:
        from scipy import sparse

        self.catalog = data.catalog
        self.index = {item: i for i, item in enumerate(data.catalog)}
        users = {u: n for n, u in enumerate(data.sequences)}
        rows = [users[u] for u, events in data.sequences.items() for e in events]
        cols = [self.index[e.item] for events in data.sequences.values() for e in events]
        matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), len(data.catalog)))
        matrix.data[:] = 1.0  # repeated interactions count once
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
        sim = (matrix.T @ matrix).toarray() / np.maximum(np.outer(norms, norms), 1e-12)
        np.fill_diagonal(sim, 0.0)
        if self.k < sim.shape[0]:  # keep exactly each item's k most similar items (ties: arbitrary but fixed)
            keep = np.argpartition(-sim, self.k - 1, axis=1)[:, : self.k]
            pruned = np.zeros_like(sim)
            rows_idx = np.arange(sim.shape[0])[:, None]
            pruned[rows_idx, keep] = sim[rows_idx, keep]
            sim = pruned
        self.sim = sim
        return self

    def score(self, user: str, history: Sequence[str]) -> np.ndarray:
        positions = [self.index[i] for i in history if i in self.index]
        return self.sim[positions].sum(axis=0) if positions else np.zeros(len(self.catalog))


class BPR(_Cornac):
    name = "bpr"

    def __init__(
        self, factors: int = 64, epochs: int = 200, learning_rate: float = 0.05, reg: float = 0.01, seed: int = 0
    ):
        from cornac.models import BPR as CornacBPR

        self.model = CornacBPR(
            k=factors, max_iter=epochs, learning_rate=learning_rate, lambda_reg=reg, seed=seed, verbose=False
        )

    def fit(self, data: TrainData) -> BPR:
        import cornac

        self.train = cornac.data.Dataset.build(self._uir(data), fmt="UIR", seed=0)
        self.model.fit(self.train)
        self._align(data, self.train.iid_map)
        return self

    def score(self, user: str, history: Sequence[str]) -> np.ndarray:
        if user not in self.train.uid_map:
            return np.zeros(len(self.catalog))
        return self._expand(self.model.score(self.train.uid_map[user]))


class SASRec(_Cornac):
    """Self-attentive sequential recommendation; each user's history is one training sequence."""

    name = "sasrec"

    def __init__(self, epochs: int = 10, dim: int = 64, max_len: int = 50, seed: int = 0):
        from cornac.models import SASRec as CornacSASRec

        self.model = CornacSASRec(
            embedding_dim=dim,
            n_epochs=epochs,
            max_len=max_len,
            num_blocks=2,
            num_heads=1,
            dropout=0.2,
            learning_rate=1e-3,
            batch_size=256,
            seed=seed,
            verbose=False,
        )

    def fit(self, data: TrainData) -> SASRec:
        import cornac

        rows = [
            (u, u, e.item, int(e.timestamp.timestamp()) * 10_000 + i)  # ties keep their order
            for u, events in data.sequences.items()
            for i, e in enumerate(events)
        ]
        self.train = cornac.data.SequentialDataset.build(rows, fmt="USIT", seed=0)
        self.model.fit(self.train)
        self._align(data, self.train.iid_map)
        return self

    def score(self, user: str, history: Sequence[str]) -> np.ndarray:
        known = [self.train.iid_map[i] for i in history if i in self.train.iid_map]
        uid = self.train.uid_map.get(user, 0)
        return self._expand(self.model.score(uid, known))


BASELINES = {
    "random": RandomRanker,
    "most-popular": MostPopular,
    "item-knn": ItemKNN,
    "bpr": BPR,
    "sasrec": SASRec,
    "sasrec-ce": SASRecCE,
    "gru4rec-ce": GRU4RecCE,
}
