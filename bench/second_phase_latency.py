"""Latency of `Recommender.recommend()` with the second phase served (issue 14: p50 <= 1 s warm with LLM
features on the embedded model), beside the learned order alone.

MovieLens-100K catalog and all 100,000 ratings as events in a fresh data dir; `train_ranker` with the
second phase (`--train-users` users' learned top `--window` judged by the configured served model, the
embedded one unless `DRIFTREC_LLM_BASE_URL` is set); then, for `--users` other users one at a time (answer
reuse off, LLM response cache off):

- learned: the learned order alone (no LLM call), as served without a second phase;
- cold: the user's first request with the phase (nothing of the prompt in vLLM's prefix cache);
- repeat: the same request again (the whole prompt cached: the floor of one call per request).

Reported: p50/p95 in ms, the phase's card (users, early-stopping NDCG@10 against the learned order), how
many answers degraded, the training time. Run:
`.venv/bin/python bench/second_phase_latency.py [--train-users 200] [--users 20] [--window 20] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from common import movielens_data, percentile, report
from driftrec import Recommender, load_settings


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 1), "p95_ms": round(percentile(values, 95), 1)}


async def timed(rec: Recommender, user: str) -> tuple[float, bool, str]:
    started = time.perf_counter()
    answer = await rec.recommend(user, k=10)
    return (time.perf_counter() - started) * 1000, answer.degraded, answer.ranking


async def measure(data: Path, train_users: int, users: int, window: int, stages: int) -> dict[str, object]:
    settings = load_settings(
        data_dir=data, chroma_path=data / "chroma", memory_upkeep=False, ranking_answer_cache_s=0.0
    )
    async with Recommender(settings) as rec:
        assert rec.llm is not None, "this bench needs a served model"
        started = time.perf_counter()
        await rec.train_ranker(stages=stages, second_phase_users=train_users, window=window)
        train_s = time.perf_counter() - started
        phase = rec.second_phase
        assert phase is not None
        asked = [str(u) for u in range(train_users + 1, train_users + 1 + users)]
        rec.second_phase = None
        learned = [(await timed(rec, u))[0] for u in asked]
        rec.second_phase = phase
        cold, repeat, degraded, modes = [], [], 0, set()
        for user in asked:
            for into in (cold, repeat):
                ms, was_degraded, mode = await timed(rec, user)
                into.append(ms)
                degraded += was_degraded
                modes.add(mode)
        model = rec.llm.client.model
    return {
        "model": model,
        "window": window,
        "users": users,
        "learned": summary(learned),
        "second_phase_cold": summary(cold),
        "second_phase_repeat": summary(repeat),
        "degraded_answers": degraded,
        "modes": sorted(modes),
        "train_s": round(train_s, 1),
        "second_phase": asdict(phase.card),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-users", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with movielens_data(
        ("DRIFTREC_MODEL", "DRIFTREC_LLM_BASE_URL", "DRIFTREC_LLM_MODEL", "DRIFTREC_CACHE_DIR")
    ) as data:
        result = asyncio.run(measure(data, args.train_users, args.users, args.window, args.stages))
    report(result, args.json_out)


if __name__ == "__main__":
    main()
