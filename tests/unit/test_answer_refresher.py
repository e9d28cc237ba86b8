"""The background queue that computes a user's next answer after their events (agent/refresh.py): each user
once however many writes came in, the oldest write first, a full queue drops its oldest, a failure is counted
and the queue goes on, and forgetting a user cancels their answer in flight so nothing of them is kept."""

from __future__ import annotations

import asyncio

from driftrec.agent.refresh import AnswerRefresher


class Computer:
    """Records what it computes; ``block`` holds an answer until released; ``fail`` raises for a user."""

    def __init__(self, block: str | None = None, fail: str | None = None):
        self.started: list[str] = []
        self.finished: list[str] = []
        self.block, self.fail = block, fail
        self.release = asyncio.Event()

    async def __call__(self, user: str) -> None:
        self.started.append(user)
        if user == self.fail:
            raise RuntimeError("the LLM did not answer")
        if user == self.block:
            await self.release.wait()
        await asyncio.sleep(0)
        self.finished.append(user)


async def test_each_user_once_in_the_order_of_their_first_waiting_write() -> None:
    compute = Computer()
    refresher = AnswerRefresher(compute)
    refresher.schedule(["a", "b", "a"])
    refresher.schedule(["c", "b"])
    await refresher.idle()
    assert compute.finished == ["a", "b", "c"] and refresher.done == 3 and len(refresher) == 0
    refresher.schedule(["a"])  # a later write: computed again (the store has moved)
    await refresher.idle()
    assert compute.finished == ["a", "b", "c", "a"]


async def test_a_full_queue_drops_its_oldest_waiting_user() -> None:
    compute = Computer(block="first")
    refresher = AnswerRefresher(compute, limit=2)
    refresher.schedule(["first"])
    await asyncio.sleep(0.01)  # "first" is in flight, the queue is empty
    refresher.schedule(["x", "y", "z"])
    assert len(refresher) == 2 and refresher.dropped == 1
    compute.release.set()
    await refresher.idle()
    assert compute.finished == ["first", "y", "z"]


async def test_a_failing_answer_is_counted_and_the_queue_goes_on() -> None:
    compute = Computer(fail="b")
    refresher = AnswerRefresher(compute)
    refresher.schedule(["a", "b", "c"])
    await refresher.idle()
    assert compute.finished == ["a", "c"] and refresher.failed == 1 and refresher.done == 2


async def test_dropping_a_user_cancels_their_answer_in_flight_and_their_place_in_the_queue() -> None:
    compute = Computer(block="gone")
    refresher = AnswerRefresher(compute)
    refresher.schedule(["gone", "kept", "also-gone"])
    await asyncio.sleep(0.01)
    assert compute.started == ["gone"]
    await refresher.drop("also-gone")
    await refresher.drop("gone")  # returns once the answer in flight is cancelled: it never finishes
    await refresher.idle()
    assert compute.finished == ["kept"] and refresher.done == 1


async def test_stop_cancels_the_answer_in_flight_and_forgets_the_queue() -> None:
    compute = Computer(block="slow")
    refresher = AnswerRefresher(compute)
    refresher.schedule(["slow", "never"])
    await asyncio.sleep(0.01)
    await refresher.stop()
    assert len(refresher) == 0
    compute.release.set()  # were the answer still running, it would finish now
    await asyncio.sleep(0.01)
    assert compute.started == ["slow"] and compute.finished == []
