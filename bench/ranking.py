"""Benchmark of the re-ranking step with the configured LLM: latency of one ranking (verbalizer,
listwise, verbalizer with 3 shuffles, 40 candidates as a tournament) alone and 8 at a time, and the
prompt/completion tokens each costs. Real MovieLens users, real retrieval candidates; the response
cache is off. Run: `.venv/bin/python bench/ranking.py [--users 8] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from driftrec.config import load_settings
from driftrec.data import load_movielens_100k
from driftrec.eval.protocols import first_users, leave_one_out, training_log
from driftrec.eval.retrieval_study import ingest
from driftrec.llm import open_llm
from driftrec.ranking import RankingPolicy, Reranker, build_context
from driftrec.retrieval import CandidateGenerator, RetrievalRequest

VARIANTS = {
    "verbalizer, 20 candidates": RankingPolicy(mode="verbalizer", llm_weight=1.0),
    "listwise, 20 candidates": RankingPolicy(mode="listwise", llm_weight=1.0),
    "verbalizer, 20 candidates, 3 shuffles": RankingPolicy(mode="verbalizer", llm_weight=1.0, shuffles=3),
    "verbalizer, 40 candidates (tournament)": RankingPolicy(mode="verbalizer", llm_weight=1.0, candidates=40),
}


async def main(users: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        dataset = load_movielens_100k(settings.cache_dir)
        splits = leave_one_out(dataset)
        index = await ingest(settings, dataset)
        generator = CandidateGenerator.build(settings.retrieval, index, dataset.items, training_log(splits, "test"))
        contexts = []  # the first half is ranked one at a time, the second (other users) all at once,
        # so the concurrent figure is not flattered by prompts already in vLLM's prefix cache
        for user in first_users(splits, 2 * users):
            history = splits[user].seen_before("test")
            request = RetrievalRequest(user=user, history=history, now=splits[user].test.timestamp)
            candidates = await generator.generate(request, 40)
            contexts.append(build_context(user, candidates, 10, history=history, catalog=dataset.items))
        llm = await open_llm(settings)
        try:
            out: dict[str, object] = {}
            for name, policy in VARIANTS.items():
                reranker = Reranker(llm, policy)
                single = [(await reranker.rank(c)) for c in contexts[:users]]
                started = time.perf_counter()
                together = await asyncio.gather(*(reranker.rank(c) for c in contexts[users:]))
                wall = time.perf_counter() - started
                out[name] = {
                    "single_p50_s": round(statistics.median(r.seconds for r in single), 2),
                    "single_max_s": round(max(r.seconds for r in single), 2),
                    f"{users}_concurrent_wall_s": round(wall, 2),
                    "rankings_per_s_concurrent": round(users / wall, 3),
                    "llm_calls_per_ranking": statistics.mean(r.usage.calls for r in single),
                    "prompt_tokens_per_ranking": round(statistics.mean(r.usage.prompt_tokens for r in single), 1),
                    "completion_tokens_per_ranking": round(
                        statistics.mean(r.usage.completion_tokens for r in single), 1
                    ),
                    "degraded": sum(r.degraded for r in single + list(together)),
                }
                print(name, out[name], flush=True)
        finally:
            await llm.aclose()
    return {"machine": f"{platform.machine()} python {platform.python_version()}", "users": users, "results": out}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.users))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
