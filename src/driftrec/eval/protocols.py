"""Evaluation protocols: how a dataset is cut into what the system may see and what it must predict."""

from __future__ import annotations

from dataclasses import dataclass

from driftrec.data.dataset import Dataset
from driftrec.models import Interaction


@dataclass(frozen=True)
class UserSplit:
    """One user's leave-one-out split by time: ... history | valid | test."""

    user: str
    history: list[Interaction]  # everything before the validation interaction
    valid: Interaction
    test: Interaction

    def seen_before(self, stage: str) -> list[Interaction]:
        """What the system may know when predicting ``stage`` ('valid' or 'test')."""
        return self.history if stage == "valid" else [*self.history, self.valid]

    def target(self, stage: str) -> Interaction:
        return self.valid if stage == "valid" else self.test


def leave_one_out(dataset: Dataset, *, min_history: int = 1) -> dict[str, UserSplit]:
    """Per user: last interaction = test, second-to-last = validation, everything before = history.

    The protocol RecBole runs with ``eval_args: {split: {LS: valid_and_test}, order: TO}``. Interactions
    are ordered by timestamp; ties (MovieLens users often rate many films in the same second) keep the
    file's order, so the split is deterministic. Users with fewer than ``min_history + 2`` interactions
    are left out.
    """
    splits = {}
    for user, events in dataset.by_user().items():
        if len(events) < min_history + 2:
            continue
        splits[user] = UserSplit(user, events[:-2], events[-2], events[-1])
    return splits


def first_users(splits: dict[str, UserSplit], n: int | None) -> list[str]:
    """The first ``n`` users (all if None) in id order: numeric ids numerically, so runs are comparable."""
    key = int if all(u.isdigit() for u in splits) else str
    return sorted(splits, key=key)[:n]


def training_log(splits: dict[str, UserSplit], stage: str) -> list[Interaction]:
    """Every interaction the system may learn from when predicting ``stage`` for every user.

    For 'test' that is each user's history plus their validation item; no user's test item is in it,
    and for 'valid' no validation or test item is.
    """
    return [event for split in splits.values() for event in split.seen_before(stage)]
