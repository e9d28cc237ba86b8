"""Each user's latest answer, kept so a repeat of the same request is not computed again.

A serving process answers the same user many times while nothing about them changes (a page reloaded,
a list paged through). An answer is kept under everything it was computed from: the request (k, query,
filters, exclude, explain), the user's state as that request read it from the store (one statement that
moves with their events, profile head, summaries, stated preferences in force and edits —
``Memory.state_blocking``: a write through any process is seen by the next read, and a repeat reads that
one row instead of the five), and this process's ranker and index build (the indexes' event position too
only with ``answer_follows_indexes``). Time alone moves popularity windows and the open session, and other
users' events move the shared indexes, so a kept answer is reused for at most ``ttl_s``. A degraded
answer is kept (the chat explains the latest answer, whatever it was) but never reused: the dependency
that failed may be back.

Answers are kept as their JSON text: a kept RecommendationList is ~100 Python objects, and 10,000 of
them in the long-lived generations made every older-generation garbage collection walk a million objects —
~200 ms pauses that set the p99 at 1M users. A string is nothing for the collector to walk. The text is the
answer without its timing fields (``seconds``, ``cached``: the last two), so the one serialization of a
computed answer is both what is kept and, with them appended (``answer_json``), what the HTTP service sends;
a reuse sends the kept text without parsing it (the Python API parses it, ~50 µs for ten items).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from driftrec.models import RecommendationList

TIMING = ("seconds", "cached")  # RecommendationList's last two fields: what a reuse of the same answer changes


def answer_body(answer: RecommendationList) -> str:
    """The answer's JSON without its timing fields: what is kept."""
    return answer.model_dump_json(exclude=set(TIMING))


def answer_json(body: str, seconds: float, cached: bool) -> str:
    """A kept body with its timing fields appended: the text ``model_dump_json`` writes for the whole answer
    (tests/unit/test_recent_answers.py compares them), without building the answer."""
    return f'{body[:-1]},"seconds":{seconds!r},"cached":{"true" if cached else "false"}}}'


class RecentAnswers:
    """Per user, the latest answer and the key it was computed under; at most ``max_users`` users, the
    least recently asked leave first. Thread-safe, O(1) per call."""

    def __init__(self, ttl_s: float, max_users: int, clock: Callable[[], float] = time.monotonic):
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        self.ttl_s = ttl_s
        self.max_users = max_users
        self._clock = clock
        # per user: key, when, degraded, body, seconds it took
        self._entries: OrderedDict[str, tuple[Hashable, float, bool, str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def reusable(self, user: str, key: Hashable) -> str | None:
        """The body (``answer_body``) of the answer to reuse for ``user``'s request ``key``: the latest one, if
        it was computed under the same key less than ``ttl_s`` ago and was not degraded; else None."""
        if self.ttl_s <= 0:
            return None
        with self._lock:
            entry = self._entries.get(user)
            fresh = entry is not None and entry[0] == key and not entry[2] and self._clock() - entry[1] <= self.ttl_s
            if not fresh:
                self.misses += 1
                return None
            assert entry is not None
            self._entries.move_to_end(user)
            self.hits += 1
        return entry[3]

    def remember(self, user: str, key: Hashable, answer: RecommendationList) -> str:
        """Make ``answer`` the user's latest (computed under ``key``, now); returns its kept body."""
        body = answer_body(answer)
        with self._lock:
            self._entries[user] = (key, self._clock(), answer.degraded, body, answer.seconds)
            self._entries.move_to_end(user)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)
        return body

    def last(self, user: str) -> RecommendationList | None:
        """The latest answer given to ``user`` in this process, however old (for "why did you recommend X?")."""
        with self._lock:
            entry = self._entries.get(user)
        return RecommendationList.model_validate_json(answer_json(entry[3], entry[4], False)) if entry else None

    def forget(self, user: str | None = None) -> None:
        """Drop one user's answer (forgetting them), or every user's (``None``)."""
        with self._lock:
            if user is None:
                self._entries.clear()
            else:
                self._entries.pop(user, None)

    def __len__(self) -> int:
        return len(self._entries)
