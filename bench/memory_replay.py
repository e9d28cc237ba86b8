"""Benchmark of profile building: replay MovieLens users session by session with the configured LLM.

Prints seconds and LLM tokens per session (one summary + one profile update each) and per user, and
how many of the LLM's proposed interests and dislikes the user's own events contradicted (rejected by
memory/evidence.py), per 100 profile updates.
Run: `.venv/bin/python bench/memory_replay.py [--users 3] [--sessions 4] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from driftrec.config import load_settings
from driftrec.data import load_movielens_100k
from driftrec.llm import open_llm
from driftrec.memory.replay import replay
from driftrec.memory.service import Memory
from driftrec.memory.sessions import sessionize


async def main(users: int, sessions: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        dataset = load_movielens_100k(settings.cache_dir)
        by_user = dataset.by_user()
        chosen = [
            u
            for u in sorted(by_user, key=int)
            if len(sessionize(by_user[u], timedelta(minutes=settings.memory.session_gap_minutes))) >= sessions
        ]
        chosen = chosen[:users]
        llm = await open_llm(settings)
        try:
            memory = await asyncio.to_thread(Memory.open, settings, dataset.items, llm)
            per_user = []
            for user in chosen:
                before = llm.client.usage.as_dict()
                started = time.perf_counter()
                results = await replay(memory, by_user[user], max_sessions=sessions)
                seconds = time.perf_counter() - started
                after = llm.client.usage.as_dict()
                per_user.append(
                    {
                        "user": user,
                        "sessions": len(results),
                        "seconds": round(seconds, 1),
                        "failures": sum(1 for r in results if r.error),
                        "updates": sum(1 for r in results if r.updated),
                        "claims": sum(r.claims for r in results),
                        "rejected": sum(len(r.rejected) for r in results),
                        "rejected_dislikes": sum(1 for r in results for x in r.rejected if x.kind == "dislike"),
                        "prompt_tokens": after["prompt_tokens"] - before["prompt_tokens"],
                        "completion_tokens": after["completion_tokens"] - before["completion_tokens"],
                    }
                )
                print(per_user[-1], flush=True)
        finally:
            await llm.aclose()
    total_sessions = sum(u["sessions"] for u in per_user)
    updates = max(sum(u["updates"] for u in per_user), 1)
    return {
        "rejected_per_100_updates": round(100 * sum(u["rejected"] for u in per_user) / updates, 1),
        "rejected_share_of_claims": round(
            sum(u["rejected"] for u in per_user) / max(sum(u["claims"] for u in per_user), 1), 3
        ),
        "model": settings.model,
        "users": per_user,
        "seconds_per_session": round(sum(u["seconds"] for u in per_user) / max(total_sessions, 1), 2),
        "prompt_tokens_per_session": round(sum(u["prompt_tokens"] for u in per_user) / max(total_sessions, 1)),
        "completion_tokens_per_session": round(sum(u["completion_tokens"] for u in per_user) / max(total_sessions, 1)),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    figures = asyncio.run(main(args.users, args.sessions))
    print(json.dumps(figures, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
