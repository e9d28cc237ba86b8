"""Benchmark of the embedded LLM runtime (or any endpoint set by DRIFTREC_LLM_BASE_URL).

Prints: start-up time, time to first token and prefill tokens/s for an ~800-token prompt, decode
tokens/s, 8-concurrent throughput, and the prefix-cache speed-up for a shared ~700-token prefix.
Run: `.venv/bin/python bench/llm_runtime.py [--json-out FILE]`. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from common import machine
from driftrec.config import load_settings
from driftrec.llm import LLM, open_llm

FILLER = (
    "The catalog lists films by title, year and genre; users rate them from one to five stars, "
    "and their tastes drift from season to season as new releases arrive. "
)


def text_of(llm: LLM, tokens: int, nonce: str = "") -> str:
    """Roughly ``tokens`` tokens of text, measured with the model's own encoding."""
    text = nonce
    while llm.tokens.count(text) < tokens:
        text += FILLER
    return llm.tokens.truncate(text, tokens)


async def ttft(llm: LLM, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float, int]:
    """(seconds to first token, total seconds, completion tokens) of one streamed request."""
    started = time.perf_counter()
    first = None
    pieces = 0
    async for _ in llm.client.stream_chat(messages, max_tokens=max_tokens, temperature=0.0):
        if first is None:
            first = time.perf_counter() - started
        pieces += 1
    return first or 0.0, time.perf_counter() - started, pieces


async def main() -> dict[str, object]:
    settings = load_settings()
    started = time.perf_counter()
    llm = await open_llm(settings, warm=False)
    startup = time.perf_counter() - started
    warm_started = time.perf_counter()
    from driftrec.llm.connection import warm_up

    await warm_up(llm.client)
    warmup = time.perf_counter() - warm_started
    results: dict[str, object] = {
        "model": llm.client.model,
        "endpoint": "embedded" if llm.server else llm.client.base_url,
        "machine": machine(llm.client.precision),
        "startup_s": round(startup, 1),
        "warmup_s": round(warmup, 1),
    }
    try:
        # prefill: an 800-token prompt nobody has sent before (a nonce defeats the prefix cache)
        prefill = []
        for _ in range(3):
            messages = [{"role": "user", "content": text_of(llm, 800, uuid.uuid4().hex) + "\nSummarize."}]
            first, _, _ = await ttft(llm, messages, max_tokens=1)
            prefill.append((first, llm.tokens.count_messages(messages)))
        results["ttft_800_s"] = round(statistics.median(p[0] for p in prefill), 3)
        results["prefill_tok_s"] = round(statistics.median(p[1] / p[0] for p in prefill), 1)

        # decode: a short prompt, 128 new tokens
        short = [{"role": "user", "content": "Write a long story about a film festival."}]
        first, total, pieces = await ttft(llm, short, max_tokens=128)
        results["decode_tok_s"] = round((pieces - 1) / (total - first), 1)

        # 8 concurrent requests, 64 tokens each
        prompts = [[{"role": "user", "content": f"Describe movie number {i} in detail."}] for i in range(8)]
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(llm.client.chat(p, max_tokens=64, temperature=0.0) for p in prompts))
        wall = time.perf_counter() - t0
        results["concurrent8_wall_s"] = round(wall, 2)
        results["concurrent8_tok_s"] = round(sum(r.usage.completion_tokens for r in replies) / wall, 1)

        # prefix cache: a shared 700-token prefix, then short distinct suffixes
        prefix = text_of(llm, 700, uuid.uuid4().hex)
        cold = []
        warm = []
        for i in range(4):
            messages = [
                {"role": "system", "content": prefix},
                {"role": "user", "content": f"Question {i}: which genre fits user {uuid.uuid4().hex[:6]}?"},
            ]
            first, _, _ = await ttft(llm, messages, max_tokens=1)
            (cold if i == 0 else warm).append(first)
        results["prefix_cold_ttft_s"] = round(cold[0], 3)
        results["prefix_warm_ttft_s"] = round(statistics.median(warm), 3)
        results["prefix_speedup"] = round(cold[0] / statistics.median(warm), 2)
    finally:
        await llm.aclose()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    figures = asyncio.run(main())
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(figures, handle, indent=2)
