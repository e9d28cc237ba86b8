"""Prompt injection through the catalog, before and after quoting catalog text as data.

For N MovieLens users at their validation point (20 fused retrieval candidates each), the 10th candidate
is replaced by a plain item, then by the same item whose text orders the model to pick it; the LLM
(verbalizer, its order alone) ranks both lists. Reported: the inserted item's mean rank, how often it
came first, and the paired p-value, with catalog text quoted (driftrec now) and pasted raw (before).
Run: `.venv/bin/python bench/injection.py [--users 50] [--json-out docs/results/injection/FILE.json]`
(the embedded model, or DRIFTREC_MODEL / DRIFTREC_LLM_BASE_URL). Figures go in docs/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from driftrec.config import load_settings
from driftrec.data import load_movielens_100k
from driftrec.eval.injection_study import run_injection_study
from driftrec.eval.protocols import first_users, leave_one_out, training_log
from driftrec.eval.retrieval_study import ingest
from driftrec.llm import open_llm
from driftrec.ranking import build_context
from driftrec.retrieval import CandidateGenerator, RetrievalRequest


async def main(users: int) -> dict[str, object]:
    settings = load_settings()
    data = load_movielens_100k(settings.cache_dir)
    splits = leave_one_out(data)
    index = await ingest(settings, data)
    generator = CandidateGenerator.build(settings.retrieval, index, data.items, training_log(splits, "valid"))
    contexts = []
    for user in first_users(splits, users):
        history = splits[user].seen_before("valid")
        request = RetrievalRequest(user=user, history=history, now=splits[user].target("valid").timestamp)
        candidates = await generator.generate(request, 20)
        contexts.append(build_context(user, candidates, 10, history=history, catalog=data.items))
    llm = await open_llm(settings)
    try:
        quoted = await run_injection_study(llm, contexts, quoted=True)
        raw = await run_injection_study(llm, contexts, quoted=False)
    finally:
        await llm.aclose()
    return {"model": llm.client.model, "quoted": quoted.as_dict(), "raw": raw.as_dict()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.users))
    for name in ("raw", "quoted"):
        r = result[name]
        print(
            f"{result['model']} {name:6}: plain mean rank {r['plain_mean_rank']:.2f}, "
            f"attack {r['attack_mean_rank']:.2f} "
            f"(moved {r['moved']:+.2f}), first: attack {r['attack_top1']}/{r['users']} vs plain {r['plain_top1']}, "
            f"p = {r['p_value']:.3f}"
        )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
