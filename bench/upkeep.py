"""Benchmark of automatic profile upkeep: how fast the background worker refreshes profiles.

Records the last ``--sessions`` sessions of ``--users`` MovieLens users (closed long ago, so all are
due at once), starts a Recommender with the configured LLM and upkeep on, and times the worker until
no user is due. Prints users and sessions per minute and the worker's counts.
Run: `.venv/bin/python bench/upkeep.py [--users 20] [--sessions 2] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from driftrec.agent import Recommender
from driftrec.config import load_settings
from driftrec.data import load_movielens_100k
from driftrec.memory.sessions import sessionize


async def main(users: int, sessions: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), memory_upkeep=True, memory_upkeep_interval_s=0.5)
        dataset = load_movielens_100k(settings.cache_dir)
        gap = timedelta(minutes=settings.memory.session_gap_minutes)
        by_user = dataset.by_user()
        chosen = [u for u in sorted(by_user, key=int) if len(sessionize(by_user[u], gap)) >= sessions][:users]
        events = [e for u in chosen for s in sessionize(by_user[u], gap)[-sessions:] for e in s.interactions]
        async with Recommender.from_settings(settings) as rec:
            assert rec.upkeep is not None
            memory = rec._require()
            started = time.perf_counter()
            await rec.observe(events, upkeep=True)  # every session closed long ago: all due now
            rec.upkeep.poke()
            pending = "SELECT COUNT(*) FROM upkeep WHERE attempts <= ?"  # retries left: still the worker's

            def left() -> int:
                return memory.db.connection().execute(pending, (settings.memory.upkeep_retries,)).fetchone()[0]

            while await asyncio.to_thread(left):  # noqa: ASYNC110 - polling the durable queue is the point
                await asyncio.sleep(0.5)
            seconds = time.perf_counter() - started
            stats = rec.upkeep.stats
            versions = [(await rec.profile(u)).version for u in chosen]
    return {
        "model": settings.model,
        "users": len(chosen),
        "sessions": sessions * len(chosen),
        "seconds": round(seconds, 1),
        "users_per_minute": round(60 * len(chosen) / seconds, 1),
        "sessions_per_minute": round(60 * sessions * len(chosen) / seconds, 1),
        "refreshed": stats.refreshed,
        "updated": stats.updated,
        "failed_attempts": stats.failed,
        "summarized": stats.summarized,
        "users_with_a_profile": sum(v > 0 for v in versions),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    figures = asyncio.run(main(args.users, args.sessions))
    print(json.dumps(figures, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
