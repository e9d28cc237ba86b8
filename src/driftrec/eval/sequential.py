"""Next-item models trained the way a strong baseline must be: a softmax over the whole catalog at every
position (cross-entropy, no sampled negatives), early stopping on validation NDCG@10 from held-out events.

Shared by ``sasrec-ce`` (driftrec.eval.sasrec) and ``gru4rec-ce`` (driftrec.eval.gru4rec): only the
network differs. Early stopping needs a validation target that the stage being evaluated never reveals:
each user's last training event is held out, the model trains on the events before it, and the epoch with
the best NDCG@10 on those held-out events is kept (RecBole's protocol). At ranking time the whole training
sequence, held-out event included, is the model's input. ``fit`` records the epochs run, the best epoch
and its validation NDCG@10 (``report``).
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

import numpy as np

from driftrec.eval.ranker_base import Ranker, TrainData

if TYPE_CHECKING:
    import torch


@dataclass
class TrainingReport:
    epochs_run: int = 0
    best_epoch: int = 0
    best_valid_ndcg10: float = 0.0
    seed: int = 0
    seconds: float = 0.0
    curve: list[float] = field(default_factory=list)  # validation NDCG@10 after each epoch


class NextItemCE(Ranker):
    """A network over left-padded item sequences (``forward``: hidden states per position; ``logits``:
    scores of every item from them), trained with full cross-entropy and early stopping."""

    def __init__(
        self,
        *,
        dim: int,
        max_len: int,
        dropout: float,
        learning_rate: float,
        batch_size: int,
        max_epochs: int,
        patience: int,
        seed: int,
    ):
        self.dim, self.max_len, self.dropout = dim, max_len, dropout
        self.learning_rate, self.batch_size = learning_rate, batch_size
        self.max_epochs, self.patience, self.seed = max_epochs, patience, seed
        self.report = TrainingReport(seed=seed)

    @abstractmethod
    def _network(self, n_items: int) -> torch.nn.Module:
        """The untrained network over items 1..n_items (0 is padding)."""

    def _encode(self, items: Sequence[str]) -> list[int]:
        return [self.index[i] for i in items if i in self.index]

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.zeros((len(rows), self.max_len), np.int64)
        for r, row in enumerate(rows):
            tail = list(row)[-self.max_len :]
            if tail:
                out[r, -len(tail) :] = tail
        return out

    def fit(self, data: TrainData) -> Self:
        import torch

        started = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.catalog = data.catalog
        self.index = {item: n + 1 for n, item in enumerate(data.catalog)}  # 0 is padding
        encoded = {u: self._encode([e.item for e in events]) for u, events in data.sequences.items()}
        # each user's last event is the early-stopping target; the events before it are trained on
        train_rows = [seq[:-1] for seq in encoded.values() if len(seq) >= 3]
        valid = [(seq[:-1], seq[-1]) for seq in encoded.values() if len(seq) >= 2]
        inputs = self._left_pad([row[:-1] for row in train_rows])
        targets = self._left_pad([row[1:] for row in train_rows])
        self.network = self._network(len(self.catalog))
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.learning_rate, betas=(0.9, 0.98))
        loss_of = torch.nn.CrossEntropyLoss()
        best_state, best, waited = None, -1.0, 0
        for epoch in range(1, self.max_epochs + 1):
            self.network.train()
            order = rng.permutation(len(inputs))
            for start in range(0, len(inputs), self.batch_size):
                batch = order[start : start + self.batch_size]
                x, y = torch.from_numpy(inputs[batch]), torch.from_numpy(targets[batch])
                real = y > 0  # the softmax over the catalog only where there is a next item (most of it)
                loss = loss_of(self.network.logits(self.network(x)[real]), y[real])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            score = self._ndcg10(valid)
            self.report.curve.append(round(score, 5))
            if score > best:
                best, waited = score, 0
                best_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
                self.report.best_epoch = epoch
            else:
                waited += 1
            self.report.epochs_run = epoch
            if waited >= self.patience:
                break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        self.network.eval()
        self.report.best_valid_ndcg10 = round(best, 5)
        self.report.seconds = round(time.perf_counter() - started, 1)
        return self

    def _scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """Next-item logits per history (rows), over catalog positions (padding column dropped)."""
        import torch

        self.network.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(histories), 256):
                x = torch.from_numpy(self._left_pad(histories[start : start + 256]))
                hidden = self.network(x)[:, -1]
                out.append(self.network.logits(hidden)[:, 1:].numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.catalog)), np.float32)

    def _ndcg10(self, cases: Sequence[tuple[Sequence[int], int]]) -> float:
        """Full-ranking NDCG@10 of the held-out events, seen items removed."""
        scores = self._scores([history for history, _ in cases])
        total = 0.0
        for row, (history, target) in zip(scores, cases, strict=True):
            row[np.asarray(history, np.int64) - 1] = -np.inf
            if target in history:  # a re-consumed item is ranked as any other seen item: not at all
                continue
            rank = int((row > row[target - 1]).sum())
            total += 1.0 / math.log2(rank + 2) if rank < 10 else 0.0
        return total / max(1, len(cases))

    def score(self, user: str, history: Sequence[str]) -> np.ndarray:
        return self._scores([self._encode(history)])[0].astype(np.float64)
