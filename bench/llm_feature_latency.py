"""Benchmark of the LLM feature's cost per request (issue 14: p50 <= 1 s warm on the embedded model).

One verbalizer call scores a window of candidates (one forward pass, the labels' logprobs). The prompt
puts the user's stable head first (recent items, profile, sessions) and the candidates last, so vLLM's
prefix cache keeps the head between a user's requests. Measured per window size on real MovieLens users
and real retrieval candidates, the response cache off, one call at a time:

- cold: the user's first request (nothing of the prompt cached);
- warm: the same user's next request with a new candidate tail (the window shifted by one, as after a
  new event): only the tail is computed;
- repeat: the same prompt again (everything cached: the floor of one call).

Each window size gets its own users, so no cold call is warmed by another size's. Prompt and head tokens
are counted with the model's own tokenizer; "s per 100 tail tokens" is what each candidate token costs.
Run: `.venv/bin/python bench/llm_feature_latency.py [--users 8] [--windows 20,10] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import machine
from driftrec.config import load_settings
from driftrec.data import load_movielens_100k
from driftrec.eval.protocols import first_users, leave_one_out, training_log
from driftrec.eval.retrieval_study import ingest
from driftrec.llm import LLM, open_llm
from driftrec.models import Candidate
from driftrec.prompts import render
from driftrec.ranking import build_context
from driftrec.ranking.context import LABELS, RankContext, prompt_variables
from driftrec.ranking.verbalizer import TEMPLATE, rank_verbalizer
from driftrec.retrieval import CandidateGenerator, RetrievalRequest


def head_tokens(llm: LLM, context: RankContext, shown: list[Candidate]) -> int:
    """Tokens before the candidate list: what the prefix cache can hold across a user's requests."""
    prompt = render(
        TEMPLATE, prompt_variables(context, shown, LABELS[: len(shown)]), counter=llm.tokens, budget=llm.context_window
    )
    messages = [dict(m) for m in prompt.messages]
    messages[-1]["content"] = str(messages[-1]["content"]).split("Candidates:")[0]
    return llm.tokens.count_messages(messages)


async def main(users: int, windows: list[int]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        dataset = load_movielens_100k(settings.cache_dir)
        splits = leave_one_out(dataset)
        index = await ingest(settings, dataset)
        generator = CandidateGenerator.build(settings.retrieval, index, dataset.items, training_log(splits, "test"))
        chosen = first_users(splits, users * len(windows))
        llm = await open_llm(settings)
        out: dict[str, object] = {}
        try:
            for n, window in enumerate(windows):
                rows = []
                for user in chosen[n * users : (n + 1) * users]:
                    history = splits[user].seen_before("test")
                    request = RetrievalRequest(user=user, history=history, now=splits[user].test.timestamp)
                    candidates = await generator.generate(request, window + 1)
                    context = build_context(user, candidates, 10, history=history, catalog=dataset.items)
                    timed = {}
                    for name, shown in (
                        ("cold", candidates[:window]),
                        ("warm", candidates[1 : window + 1]),
                        ("repeat", candidates[1 : window + 1]),
                    ):
                        started = time.perf_counter()
                        reply = await rank_verbalizer(llm, context, shown, window=window)
                        timed[name] = (time.perf_counter() - started, reply.usage.prompt_tokens)
                    rows.append((timed, head_tokens(llm, context, candidates[:window])))
                    print(window, user, {k: round(v[0], 3) for k, v in timed.items()}, flush=True)
                prompt = statistics.mean(t["cold"][1] for t, _ in rows)
                head = statistics.mean(h for _, h in rows)
                cold = [t["cold"][0] for t, _ in rows]
                warm = [t["warm"][0] for t, _ in rows]
                out[f"window {window}"] = {
                    "prompt_tokens": round(prompt),
                    "head_tokens": round(head),
                    "cold_p50_s": round(statistics.median(cold), 3),
                    "cold_max_s": round(max(cold), 3),
                    "warm_p50_s": round(statistics.median(warm), 3),
                    "warm_max_s": round(max(warm), 3),
                    "repeat_p50_s": round(statistics.median(t["repeat"][0] for t, _ in rows), 3),
                    "s_per_100_tail_tokens": round(100 * statistics.median(warm) / max(1.0, prompt - head), 3),
                    "s_per_100_prompt_tokens_cold": round(100 * statistics.median(cold) / prompt, 3),
                }
                print(window, out[f"window {window}"], flush=True)
        finally:
            await llm.aclose()
    return {
        "machine": machine(llm.client.precision),
        "model": llm.client.model,
        "users_per_window": users,
        "results": out,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--windows", default="20,10")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.users, [int(w) for w in args.windows.split(",")]))
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
