"""The event log as columns: what the co-occurrence and popularity indexes are fitted on.

Arrays, not one pydantic object per event: fitting ten million events is a few vectorized passes, and a
chunk of new events (an incremental update) is the same shape as the whole log. Users are coded as dense
integers that stay stable across chunks (``UserCodes``); items are positions in the catalog (-1: an item
the catalog does not have, ignored by every index).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from driftrec.models import Interaction


class UserCodes:
    """user id -> dense code, growing as users appear (never reused, so arrays indexed by code stay valid)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.codes)

    def code(self, user: str) -> int:
        found = self.codes.get(user)
        if found is None:
            found = self.codes[user] = len(self.codes)
        return found


@dataclass(frozen=True)
class EventColumns:
    """One chunk of the log: parallel arrays, in log order (``seq`` ascending)."""

    seq: np.ndarray  # int64, the store's log position (or the order given)
    users: np.ndarray  # int64 user codes
    items: np.ndarray  # int64 catalog positions, -1 if unknown
    times: np.ndarray  # float64 epoch seconds

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def last_seq(self) -> int:
        return int(self.seq.max()) if len(self.seq) else 0

    def known(self) -> EventColumns:
        """Only events whose item is in the catalog."""
        keep = self.items >= 0
        return EventColumns(self.seq[keep], self.users[keep], self.items[keep], self.times[keep])

    def by_user_in_time(self) -> EventColumns:
        """Sorted by user, then time, then log position: each user's sequence, oldest first."""
        order = np.lexsort((self.seq, self.times, self.users))
        return EventColumns(self.seq[order], self.users[order], self.items[order], self.times[order])

    @classmethod
    def concat(cls, chunks: Iterable[EventColumns]) -> EventColumns:
        chunks = list(chunks)
        if not chunks:
            return cls.empty()
        return cls(*(np.concatenate([getattr(c, f) for c in chunks]) for f in ("seq", "users", "items", "times")))

    @classmethod
    def empty(cls) -> EventColumns:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    @classmethod
    def from_rows(
        cls, rows: Iterable[tuple[int, str, str, float]], positions: Mapping[str, int], users: UserCodes
    ) -> EventColumns:
        """From (seq, user, item, ts) rows, as the event store reads them."""
        rows = list(rows)
        if not rows:
            return cls.empty()
        return cls(
            np.fromiter((r[0] for r in rows), np.int64, len(rows)),
            np.fromiter((users.code(r[1]) for r in rows), np.int64, len(rows)),
            np.fromiter((positions.get(r[2], -1) for r in rows), np.int64, len(rows)),
            np.fromiter((r[3] for r in rows), np.float64, len(rows)),
        )

    @classmethod
    def from_interactions(
        cls, events: Iterable[Interaction], positions: Mapping[str, int], users: UserCodes
    ) -> EventColumns:
        """From validated events in the order given (evaluation splits, tests)."""
        return cls.from_rows(
            ((n, e.user, e.item, e.timestamp.timestamp()) for n, e in enumerate(events, start=1)), positions, users
        )
