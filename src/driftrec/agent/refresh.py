"""Answers computed after a write, not on the next read: when a served second phase makes each answer cost an
LLM call (seconds on a CPU), the user's next answer is computed in the background as soon as their events
are recorded, so the request after an event finds it kept (answer reuse) or, asked differently, its LLM
prompt already in vLLM's prefix cache.

One user at a time (the LLM is the bottleneck; requests keep priority by being many), each user once however
many writes came in meanwhile (the answer reads the store when it is computed: the latest write wins), at
most ``limit`` users waiting (the oldest waiting leaves first). Forgetting a user drops them and cancels
their answer in flight, so nothing of them is kept after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)


class AnswerRefresher:
    """A queue of users whose next answer is computed in the background by ``compute(user)``."""

    def __init__(self, compute: Callable[[str], Awaitable[object]], limit: int = 1000):
        self.compute = compute
        self.limit = limit
        self._waiting: dict[str, None] = {}  # insertion-ordered: the oldest write first
        self._current: tuple[str, asyncio.Task[object]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.done = 0  # answers computed
        self.failed = 0  # answers that raised (logged; the next request computes its own)
        self.dropped = 0  # users pushed out of a full queue

    def schedule(self, users: Iterable[str]) -> None:
        """These users' data changed: compute their next answer when the worker gets to them."""
        for user in users:
            if user in self._waiting:
                continue
            if len(self._waiting) >= self.limit:
                self._waiting.pop(next(iter(self._waiting)))
                self.dropped += 1
            self._waiting[user] = None
        if self._waiting and (self._worker is None or self._worker.done()):
            self._worker = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._waiting:
            user = next(iter(self._waiting))
            del self._waiting[user]
            task = asyncio.ensure_future(self.compute(user))
            self._current = (user, task)
            try:
                await task
                self.done += 1
            except asyncio.CancelledError:
                worker = asyncio.current_task()
                if worker is not None and worker.cancelling():  # the worker itself was cancelled (stop)
                    task.cancel()
                    raise
                # else drop() cancelled this answer alone: go on with the next user
            except Exception as exc:  # a background answer never takes the service down
                self.failed += 1
                log.warning("answer refresh for a user failed: %s: %s", type(exc).__name__, exc)
            finally:
                self._current = None

    async def drop(self, user: str) -> None:
        """Forget ``user`` here: out of the queue, and their answer in flight cancelled (and waited for)."""
        self._waiting.pop(user, None)
        current = self._current
        if current is not None and current[0] == user:
            current[1].cancel()
            await asyncio.wait({current[1]})

    async def idle(self) -> None:
        """Wait until every scheduled answer is computed (tests, a graceful drain)."""
        while self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker})

    async def stop(self) -> None:
        """Cancel the worker; it cancels the answer in flight (only the worker runs one)."""
        self._waiting.clear()
        worker = self._worker
        if worker is not None and not worker.done():
            worker.cancel()
            await asyncio.wait({worker})

    def __len__(self) -> int:
        return len(self._waiting)
