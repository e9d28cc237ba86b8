"""Latency of `Recommender.recommend()` without an LLM call, fusion order vs the learned ranker.

MovieLens-100K catalog and all 100,000 ratings as events in a fresh data dir; the learned ranker trained
on them (`Recommender.train_ranker`); then `recommend(user, k=10)` for N users one at a time (warm, after
5 unmeasured calls), with the ranker and without it, every answer computed (answer reuse off); then the
same users asked again with reuse on (`DRIFTREC_RANKING_ANSWER_CACHE_S`: the repeat of a request whose
inputs did not change). Reported: p50/p95/p99 in ms, the pool size the ranker re-ranks, and the training
time. Issue 14's target: p50 ≤ 30 ms, p95 ≤ 60 ms.
Run: `.venv/bin/python bench/recommend_latency.py [--users 200] [--stages 5] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from common import movielens_data, percentile, report
from driftrec import Recommender, load_settings
from driftrec.agent.answers import RecentAnswers


async def timings(rec: Recommender, users: list[str]) -> tuple[list[float], int]:
    for user in users[:5]:
        await rec.recommend(user, k=10)
    out, pool = [], 0
    for user in users:
        started = time.perf_counter()
        answer = await rec.recommend(user, k=10)
        out.append((time.perf_counter() - started) * 1000)
        pool = max(pool, answer.candidates)
    return out, pool


async def measure(data: Path, users: int, stages: int) -> dict[str, object]:
    settings = load_settings(
        data_dir=data, chroma_path=data / "chroma", memory_upkeep=False, ranking_answer_cache_s=0.0
    )
    ids = [str(u) for u in range(1, users + 1)]
    async with Recommender(settings, llm=None) as rec:
        fusion, fusion_pool = await timings(rec, ids)
        started = time.perf_counter()
        model = await rec.train_ranker(stages=stages)
        train_s = time.perf_counter() - started
        learned, learned_pool = await timings(rec, ids)
        rec.answers = RecentAnswers(ttl_s=60.0, max_users=10_000)  # reuse on: ask every user once, then again
        for user in ids:
            await rec.recommend(user, k=10)
        repeat, repeat_pool = await timings(rec, ids)
        assert rec.answers.hits >= len(ids), "every repeat reused its answer"
    row = {}
    for name, values, pool in (
        ("fusion", fusion, fusion_pool),
        ("learned", learned, learned_pool),
        ("learned_repeat_reused", repeat, repeat_pool),
    ):
        row[name] = {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 95), 1),
            "p99_ms": round(percentile(values, 99), 1),
            "candidates": pool,
        }
    return {
        "users": users,
        "train_s": round(train_s, 1),
        "lambdamart_s": model.card.seconds,
        "examples": model.card.users,
        **row,
        "machine": f"{os.cpu_count()} cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with movielens_data() as data:
        result = asyncio.run(measure(data, args.users, args.stages))
    report(result, args.json_out)


if __name__ == "__main__":
    main()
