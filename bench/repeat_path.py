"""What a repeat request costs in process, on SQLite and on PostgreSQL: the path most served requests take.

MovieLens-100K catalog and all 100,000 ratings as events (copied into a pgserver PostgreSQL for that
backend); `recommend(user, k=10)` once for each of N users (computed, kept), then every user again R times
(each a repeat whose inputs did not change: reused). Reported per backend: wall time per repeat
(p50/p95/p99, one at a time, no load beside it), this process's CPU per repeat, and the database server's
CPU per repeat (PostgreSQL: its processes' CPU, from /proc). A repeat reads the user's stored state (to
prove nothing changed) and parses the kept answer; the rest is asyncio and a worker-thread hop.
Run: `.venv/bin/python bench/repeat_path.py [--users 300] [--rounds 5] [--backends sqlite postgresql]
[--json-out FILE]` (`PYTHONPATH=<checkout>/src` measures another checkout's code on the same bench).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import movielens_data, percentile, report
from driftrec import Recommender, load_settings
from driftrec.memory.db import SqliteDatabase, open_database_url
from driftrec.memory.events import EventStore


def server_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes and their children that exited (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster and its backends (children of the postmaster whose data dir is ``data_dir``)."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(proc.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return [postmaster, *children]


async def measure(data: Path, backend: str, url: str | None, users: int, rounds: int, pg_dir: Path | None) -> dict:
    extra = {"database_url": url} if url else {}
    settings = load_settings(
        data_dir=data, chroma_path=data / "chroma", memory_upkeep=False, ranking_answer_cache_s=600.0, **extra
    )
    ids = [str(u) for u in range(1, users + 1)]
    async with Recommender(settings, llm=None) as rec:
        for user in ids:  # computed and kept
            await rec.recommend(user, k=10)
        hits_before = rec.answers.hits
        walls: list[float] = []
        pids = postgres_pids(pg_dir) if pg_dir else []
        cpu0, server0 = time.process_time(), server_cpu_s(pids)
        for _ in range(rounds):
            for user in ids:
                started = time.perf_counter()
                await rec.recommend(user, k=10)
                walls.append((time.perf_counter() - started) * 1000)
        cpu = time.process_time() - cpu0
        server = server_cpu_s(postgres_pids(pg_dir)) - server0 if pg_dir else 0.0
        reused = rec.answers.hits - hits_before
    assert reused == len(walls), f"{reused} of {len(walls)} repeats reused"
    return {
        "backend": backend,
        "repeats": len(walls),
        "p50_ms": round(statistics.median(walls), 3),
        "p95_ms": round(percentile(walls, 95), 3),
        "p99_ms": round(percentile(walls, 99), 3),
        "process_cpu_ms": round(cpu / len(walls) * 1000, 3),
        "server_cpu_ms": round(server / len(walls) * 1000, 3) if pg_dir else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    rows = []
    with movielens_data() as data:
        for backend in args.backends:
            if backend == "sqlite":
                rows.append(asyncio.run(measure(data, backend, None, args.users, args.rounds, None)))
                continue
            import pgserver

            with tempfile.TemporaryDirectory(prefix="driftrec-pg-") as tmp:
                server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
                try:
                    url = server.get_uri()
                    events = EventStore(SqliteDatabase(data / "memory.db")).all_blocking()
                    EventStore(open_database_url(url, data)).append_blocking(events)
                    rows.append(asyncio.run(measure(data, backend, url, args.users, args.rounds, Path(tmp) / "pg")))
                finally:
                    server.cleanup()
    report(
        {"users": args.users, "rounds": args.rounds, "rows": rows, "machine": f"{os.cpu_count()} cores"}, args.json_out
    )


if __name__ == "__main__":
    main()
