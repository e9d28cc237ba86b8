"""The processes of one `driftrec serve --workers N` share a tally of their connections, and a process above
its share closes connections after a response until the split is even — only the excess, never below the
share. Two tallies on one file stand for two processes (this one and its parent, both alive)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftrec.server.balance import ConnectionTally, create_tally


@pytest.fixture
def tally_file() -> Path:
    path = create_tally(2)
    yield path  # type: ignore[misc]
    path.unlink(missing_ok=True)


def test_a_process_above_its_share_sheds_only_the_excess_and_the_other_none(tally_file: Path) -> None:
    busy, idle = ConnectionTally(tally_file), ConnectionTally(tally_file, pid=os.getppid())
    busy.publish(27)
    idle.publish(23)
    # a burst of requests on the busy process's connections, before any shed one has closed
    sheds = [busy.should_shed(27) for _ in range(6)]
    assert sheds == [True, True, False, False, False, False]  # 27 -> 25: the share of 50 over two
    assert not any(idle.should_shed(23) for _ in range(3))
    # the two shed connections close; their clients reconnect, one landing on each process
    busy.left()
    busy.left()
    busy.publish(26)
    idle.publish(24)
    assert busy.should_shed(26) and not busy.should_shed(26)
    busy.left()
    busy.publish(25)
    idle.publish(25)
    assert not busy.should_shed(25) and not idle.should_shed(25)  # even: nothing more closes


def test_an_odd_total_and_a_lone_process_shed_nothing(tally_file: Path) -> None:
    one = ConnectionTally(tally_file)
    one.publish(40)
    assert not one.should_shed(40)  # alone: there is nowhere else to go
    other = ConnectionTally(tally_file, pid=os.getppid())
    other.publish(25)
    one.publish(26)
    assert not one.should_shed(26)  # 26 of 51 is the ceiling of the share


def test_a_replacement_process_takes_a_dead_process_slot_and_its_stale_count_is_gone(tally_file: Path) -> None:
    first, second = ConnectionTally(tally_file), ConnectionTally(tally_file, pid=os.getppid())
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = ConnectionTally(tally_file, pid=int(done.stdout))  # a process that has died since
    killed.publish(30)
    first.publish(10)
    second.publish(10)
    assert not first.should_shed(10)  # the stale 30 only raises the share
    ConnectionTally(tally_file, pid=os.getpid() + 10**7)  # its replacement claims a slot, clearing the dead one's
    assert first.should_shed(16)  # 16 of 26 over the three live processes: the dead one's 30 no longer counts


def test_a_released_slot_is_free_for_the_next_process(tally_file: Path) -> None:
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(5)]
    try:
        claimed = [ConnectionTally(tally_file, pid=p.pid) for p in sleepers[:4]]  # room for two workers, twice
        with pytest.raises(RuntimeError, match="no free slot"):
            ConnectionTally(tally_file, pid=sleepers[4].pid)
        claimed[1].release()
        assert ConnectionTally(tally_file, pid=sleepers[4].pid).index == claimed[1].index
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
