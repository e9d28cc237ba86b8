"""What every baseline is: fitted on a stage's training log, scoring the whole catalog for a user."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from driftrec.models import Interaction


@dataclass
class TrainData:
    """What a ranker may learn from: the catalog and every user's time-ordered interactions."""

    catalog: list[str]
    sequences: Mapping[str, Sequence[Interaction]]


class Ranker(ABC):
    name: str

    @abstractmethod
    def fit(self, data: TrainData) -> Ranker: ...

    @abstractmethod
    def score(self, user: str, history: Sequence[str]) -> np.ndarray:
        """A score per catalog item (``data.catalog`` order); higher is better."""

    def recommend(self, user: str, history: Sequence[str], k: int, catalog: list[str]) -> list[str]:
        scores = np.asarray(self.score(user, history), dtype=float).copy()
        if getattr(self, "_positions_for", None) is not catalog:
            self._positions_for, self._positions = catalog, {item: i for i, item in enumerate(catalog)}
        index = self._positions
        for item in history:
            if item in index:
                scores[index[item]] = -np.inf
        order = np.argsort(-scores, kind="stable")[:k]
        return [catalog[i] for i in order if np.isfinite(scores[i])]
