"""Profile upkeep: the background worker that keeps long-term profiles current by itself.

``observe`` marks each user whose events arrive as due once their session will have closed (last event
+ the session gap); the mark is a row in the memory database, so work pending at a crash or restart is
found again. The worker wakes every ``interval_s`` (or when poked), takes at most ``batch`` due users,
and refreshes their profiles a few at a time. A refresh is idempotent per session (summaries are keyed
by user and session), so a retry never double-counts. A failure is retried with exponential backoff;
after ``retries`` failed attempts the user waits for new events (or a day). A user with more closed
sessions than one refresh takes stays due and is picked up again on the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from driftrec.memory.service import Memory

log = logging.getLogger(__name__)

GIVE_UP_S = 86400.0  # after the last retry, look again a day later (or as soon as new events arrive)


@dataclass
class UpkeepStats:
    refreshed: int = 0  # users whose refresh succeeded (updated or nothing to do)
    updated: int = 0  # of those, users who got a new profile version
    failed: int = 0  # failed attempts (each is retried)
    summarized: int = 0  # sessions summarized


class Upkeep:
    def __init__(
        self,
        memory: Memory,
        *,
        interval_s: float = 30.0,
        retries: int = 5,
        max_sessions: int = 20,
        batch: int = 64,
        concurrency: int = 2,
        backoff_s: float = 5.0,
    ):
        self.memory = memory
        self.interval_s = interval_s
        self.retries = retries
        self.max_sessions = max_sessions
        self.batch = batch
        self.backoff_s = backoff_s
        self.stats = UpkeepStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="driftrec-upkeep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Look for due users now instead of at the next interval."""
        self._poke.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # never let one bad pass kill the worker
                log.exception("profile upkeep pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval_s)
            self._poke.clear()

    async def run_once(self, now: float | None = None) -> int:
        """One pass: refresh every due user (at most ``batch``); returns how many were attempted."""
        due = await asyncio.to_thread(self.memory.due_blocking, now or time.time(), self.batch)
        await asyncio.gather(*(self._one(user) for user in due))
        return len(due)

    async def _one(self, user: str) -> None:
        async with self._slots:
            started = time.time()
            try:
                result = await self.memory.refresh_profile(user, max_sessions=self.max_sessions)
                error = result.error
            except Exception as exc:  # a store error: retried like an LLM failure
                result, error = None, f"{type(exc).__name__}: {exc}"
            if error is None and result is not None:
                self.stats.refreshed += 1
                self.stats.updated += int(result.updated)
                self.stats.summarized += result.summarized
                if result.remaining:  # more closed sessions than one refresh takes: stay due
                    await asyncio.to_thread(self.memory.upkeep_reschedule_blocking, user, started)
                else:
                    await asyncio.to_thread(self.memory.upkeep_done_blocking, user, started)
                return
            self.stats.failed += 1
            if result is not None:
                self.stats.summarized += result.summarized
            attempts = await asyncio.to_thread(self.memory.upkeep_attempts_blocking, user) + 1
            delay = GIVE_UP_S if attempts > self.retries else self.backoff_s * 2 ** (attempts - 1)
            await asyncio.to_thread(self.memory.upkeep_reschedule_blocking, user, started + delay, error or "failed")
            log.warning("profile upkeep of user %s failed (attempt %d): %s", self.memory.tag(user), attempts, error)
