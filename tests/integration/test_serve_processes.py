"""`driftrec serve --workers 2` for real: each process accepts from a socket of its own on the port, so a
client that opens its connections at once (a pool, a proxy's keep-alive upstream) reaches both processes,
and the processes then even the split out by closing their excess connections after a response.
With uvicorn's one shared socket the process that woke first took most of them (48/2 and 50/0 measured on
PostgreSQL, docs/benchmarks.md). Every request reaches the access log, users as pseudonyms. Real MovieLens
data, real embedded Chroma, SQLite; no LLM (not what is tested). Linux only: elsewhere SO_REUSEPORT does not
balance and the shared socket stays."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from driftrec.config import Settings
from driftrec.server.balance import TALLY_ENV
from driftrec.server.processes import balanced_sockets_supported
from tests.conftest import copy_of, served

pytestmark = pytest.mark.skipif(not balanced_sockets_supported(), reason="SO_REUSEPORT balances on Linux only")


def _sockets_by_process(port: int) -> tuple[Counter[int], Counter[int]]:
    """(listening sockets, established connections) on ``port`` per process id, read from /proc."""
    listening, established = set(), set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                {"0A": listening, "01": established}.get(fields[3], set()).add(fields[9])
    listens: Counter[int] = Counter()
    serves: Counter[int] = Counter()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # gone, or not ours
            continue
        for link in links:
            inode = link.removeprefix("socket:[").removesuffix("]")
            listens[int(proc.name)] += inode in listening
            serves[int(proc.name)] += inode in established
    return +listens, +serves


def _tally_pids(worker: int) -> set[int]:
    """The processes with a slot in the shared count of connections that ``worker`` takes part in (the file
    named in its environment: a (process id, connections) pair of int64 per slot)."""
    environ = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{worker}/environ").read_text().split("\0") if "=" in entry
    )
    slots = memoryview(Path(environ[TALLY_ENV]).read_bytes()).cast("q")
    return {pid for pid in slots[0::2] if pid}


@contextmanager
def two_processes(data: Path, settings: Settings) -> Iterator[tuple[str, int, Counter[int]]]:
    """`driftrec serve --workers 2` on ``data`` (no LLM): its base URL, port, and listening sockets by process
    once both processes listen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTREC_")} | {
        "DRIFTREC_DATA_DIR": str(data),
        "DRIFTREC_CACHE_DIR": str(settings.cache_dir),
        "DRIFTREC_LLM_ENABLED": "false",
        "DRIFTREC_MEMORY_UPKEEP": "false",
        "DRIFTREC_API_RATE_PER_MINUTE": "0",
    }
    with served(data, env, workers=2) as base:
        port = int(base.rsplit(":", 1)[1])
        deadline = time.monotonic() + 120  # the first worker up answered the health check; the other may be starting
        while len(listens := _sockets_by_process(port)[0]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield base, port, listens


def _even_split_after_rounds(clients: list[httpx.Client], port: int, workers: set[int]) -> list[int]:
    """Rounds of one request per client until the processes hold the connections evenly (or 80 rounds)."""
    split: list[int] = []
    for _ in range(80):
        with ThreadPoolExecutor(len(clients)) as pool:
            assert all(r.status_code == 200 for r in pool.map(lambda c: c.get("/health"), clients))
        split = [_sockets_by_process(port)[1][pid] for pid in workers]
        if sum(split) == len(clients) and max(split) - min(split) <= 1:
            break
    return split


def test_two_processes_each_listen_on_the_port_and_a_burst_of_connections_ends_split_evenly(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    with two_processes(data, settings) as (base, port, listens):
        assert sorted(listens.values()) == [1, 1]  # a listening socket per worker; the supervisor's never listens
        assert _tally_pids(next(iter(listens))) == set(listens)  # both count in the balance before any connection
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(40)]
        try:
            # a burst, each client its own kept-alive connection, then rounds of requests: a process above half
            # the connections closes its excess after a response (Connection: close) until the split is even;
            # each client's next request reconnects, hashed afresh
            split = _even_split_after_rounds(clients, port, set(listens))
            assert split == [20, 20]  # both serve, evenly (the kernel's hash alone: 20/20 ~1 in 8)
            answers = [c.post("/v1/users/1/recommendations", json={"k": 5}) for c in clients]
            assert all(a.status_code == 200 and len(a.json()["items"]) == 5 for a in answers)
        finally:
            for client in clients:
                client.close()
    # both processes logged every request, naming the user by pseudonym only
    answered = [line for line in (data / "server.log").read_text().splitlines() if "/recommendations" in line]
    assert len(answered) == 40 and all("/v1/users/~" in line and '" 200 ' in line for line in answered)


def test_a_killed_process_is_replaced_and_the_connections_even_out_over_the_new_pair(
    settings: Settings, seeded_data: Path, tmp_path: Path
) -> None:
    """SIGKILL of one process: the supervisor starts another, which takes the dead one's slot in the shared
    count of connections (its stale count gone), and new clients end split evenly over the new pair."""
    data = copy_of(seeded_data, tmp_path / "data")
    with two_processes(data, settings) as (base, port, listens):
        first = set(listens)
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(30)]
        try:
            assert sorted(_even_split_after_rounds(clients, port, first)) == [15, 15]
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 120  # the supervisor notices, and the replacement starts its app
            while time.monotonic() < deadline:
                listens = _sockets_by_process(port)[0]
                if len(listens) == 2 and victim not in listens:
                    break
                time.sleep(0.2)
            pair = set(listens)
            assert victim not in pair and len(pair) == 2
        finally:
            for client in clients:
                client.close()
        fresh = [httpx.Client(base_url=base, timeout=60) for _ in range(30)]
        try:
            assert sorted(_even_split_after_rounds(fresh, port, pair)) == [15, 15]
        finally:
            for client in fresh:
                client.close()
    assert "connections not balanced" not in (data / "server.log").read_text()
