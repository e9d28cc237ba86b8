"""Evaluation protocols: how a dataset is cut into what the system may see and what it must predict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from driftrec.data.dataset import Dataset
from driftrec.memory.sessions import sessionize
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


@dataclass
class Case:
    """One prediction: what the user had done (oldest first), what they did next, and when."""

    history: list[Interaction]
    targets: list[str]
    now: datetime


def first_users(splits: Mapping[str, object], n: int | None) -> list[str]:
    """The first ``n`` users (all if None) in id order: numeric ids numerically, so runs are comparable."""
    key = int if all(u.isdigit() for u in splits) else str
    return sorted(splits, key=key)[:n]


def training_log(splits: dict[str, UserSplit], stage: str) -> list[Interaction]:
    """Every interaction the system may learn from when predicting ``stage`` for every user.

    For 'test' that is each user's history plus their validation item; no user's test item is in it,
    and for 'valid' no validation or test item is.
    """
    return [event for split in splits.values() for event in split.seen_before(stage)]


@dataclass(frozen=True)
class SessionSplit:
    """One user's history cut into sessions: ... earlier sessions | valid session | test session.

    The system observes sessions in time order and must predict the items of the next session.
    """

    user: str
    sessions: list[list[Interaction]]  # oldest first; the last two are the validation and test targets

    def seen_before(self, stage: str) -> list[Interaction]:
        """Every interaction before the stage's target session (what memory and retrieval may know)."""
        cut = -2 if stage == "valid" else -1
        return [e for session in self.sessions[:cut] for e in session]

    def target_session(self, stage: str) -> list[Interaction]:
        return self.sessions[-2] if stage == "valid" else self.sessions[-1]

    def targets(self, stage: str) -> list[str]:
        """The target session's distinct items the user had not consumed before (re-watches are not news)."""
        seen = {e.item for e in self.seen_before(stage)}
        return list(dict.fromkeys(e.item for e in self.target_session(stage) if e.item not in seen))

    def target(self, stage: str) -> Interaction:
        """The target session's first event: its timestamp is the moment of the prediction."""
        return self.target_session(stage)[0]


def session_replay(dataset: Dataset, *, gap_minutes: float = 1440.0, min_sessions: int = 3) -> dict[str, SessionSplit]:
    """Per user: sessions by inactivity gap; last session = test, the one before = validation.

    Users with fewer than ``min_sessions`` sessions are left out (at least one session of history), as
    are users whose target sessions hold no new item. The default gap is a day: MovieLens users rate in
    bursts with short pauses, and a 30-minute gap cuts one sitting into pieces, so "the next session"
    would often be the same evening; a day makes it a new visit (191 users qualify, 249 at 30 minutes;
    most users have a single session either way) and keeps the LLM replay to a few sessions per user.
    """
    gap = timedelta(minutes=gap_minutes)
    splits = {}
    for user, events in dataset.by_user().items():
        sessions = [s.interactions for s in sessionize(events, gap)]
        if len(sessions) < min_sessions:
            continue
        split = SessionSplit(user, sessions)
        if split.targets("valid") and split.targets("test"):
            splits[user] = split
    return splits


def session_training_log(dataset: Dataset, splits: Mapping[str, SessionSplit], stage: str) -> list[Interaction]:
    """What every system may learn from when predicting ``stage``: each evaluated user's events before
    their target session, plus every event of users who are not evaluated (they have no target)."""
    log = [event for split in splits.values() for event in split.seen_before(stage)]
    log += [e for e in dataset.interactions if e.user not in splits]
    return log


def leave_one_out_cases(dataset: Dataset, stage: str) -> tuple[dict[str, Case], list[Interaction]]:
    """Leave-one-out cases for ``stage`` (every user) and the training log every system may learn from."""
    splits = leave_one_out(dataset)
    cases = {
        u: Case(s.seen_before(stage), [s.target(stage).item], s.target(stage).timestamp) for u, s in splits.items()
    }
    return cases, training_log(splits, stage)
