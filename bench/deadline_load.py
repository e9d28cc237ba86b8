"""Load against a slow LLM: N concurrent recommendation requests, each due within one deadline.

`driftrec serve` (its own process, MovieLens-100K catalog and events, LLM weight 0.5 so every request
asks the LLM) talks to a deliberately slow OpenAI-compatible endpoint (every call takes --llm-delay
seconds; a stand-in for an overloaded vLLM: this measures the deadline path, not ranking quality). N
clients send at once. Reported: latency p50/p95/p99/max against the deadline, answers ranked by the LLM
vs degraded to the retrieval order (with their reasons), and whether every answer is valid (k items,
no duplicates, none the user already rated). Target (issue 15): p99 within the deadline + 10 %.
Run: `.venv/bin/python bench/deadline_load.py [--requests 1000] [--deadline 10] [--llm-delay 2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

from common import ingest_movielens, percentile

LABELS = [chr(ord("A") + n) for n in range(26)]


def slow_llm(delay_s: float) -> FastAPI:
    """An OpenAI-compatible endpoint that answers every call after ``delay_s``: label log-probabilities
    for ranking calls, a valid object for the start-up structured probe, "OK" otherwise."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "slow", "object": "model", "max_model_len": 32768}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        await asyncio.sleep(delay_s)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if body.get("logprobs"):
            labels = LABELS[: int(body.get("top_logprobs") or 2)]
            scores = sorted((random.uniform(-6, 0) for _ in labels), reverse=True)
            random.shuffle(labels)
            top = [{"token": t, "logprob": s, "bytes": list(t.encode())} for t, s in zip(labels, scores, strict=True)]
            choice |= {
                "message": {"role": "assistant", "content": labels[0]},
                "logprobs": {"content": [top[0] | {"top_logprobs": top}]},
            }
        elif body.get("response_format"):
            choice["message"] = {"role": "assistant", "content": json.dumps({"answer": "yes", "words": []})}
        else:
            choice["message"] = {"role": "assistant", "content": "OK"}
        usage = {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101}
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "slow",
            "choices": [choice],
            "usage": usage,
        }

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def one(client: httpx.AsyncClient, user: str, k: int) -> tuple[float, int, dict[str, Any] | None]:
    started = time.perf_counter()
    reply = await client.post(f"/v1/users/{user}/recommendations", json={"k": k})
    elapsed = time.perf_counter() - started
    return elapsed, reply.status_code, reply.json() if reply.status_code == 200 else None


async def load(url: str, users: list[str], requests: int, k: int) -> list[tuple[str, float, int, dict | None]]:
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        chosen = [users[n % len(users)] for n in range(requests)]
        replies = await asyncio.gather(*(one(client, u, k) for u in chosen))
    return [(u, *r) for u, r in zip(chosen, replies, strict=True)]


def main() -> tuple[dict[str, Any], Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--deadline", type=float, default=10.0, help="DRIFTREC_RANKING_TIMEOUT_S")
    parser.add_argument("--llm-delay", type=float, default=2.0, help="seconds the LLM takes per call")
    parser.add_argument("--llm-slots", type=int, default=8, help="DRIFTREC_LLM_MAX_CONCURRENCY")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    llm_port, api_port = free_port(), free_port()
    llm = uvicorn.Server(uvicorn.Config(slow_llm(args.llm_delay), host="127.0.0.1", port=llm_port, log_level="error"))
    threading.Thread(target=llm.run, daemon=True).start()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTREC_")} | {
            "DRIFTREC_DATA_DIR": data,
            "DRIFTREC_CHROMA_PATH": f"{data}/chroma",
            "DRIFTREC_CACHE_DIR": os.environ.get("DRIFTREC_CACHE_DIR", str(Path.home() / ".cache/driftrec")),
            "DRIFTREC_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
            "DRIFTREC_LLM_MODEL": "slow",
            "DRIFTREC_LLM_MAX_CONCURRENCY": str(args.llm_slots),
            "DRIFTREC_LLM_MAX_RETRIES": "0",
            "DRIFTREC_RANKING_LLM_WEIGHT": "0.5",
            "DRIFTREC_RANKING_TIMEOUT_S": str(args.deadline),
            "DRIFTREC_RANKING_ANSWER_CACHE_S": "0",  # every request takes the LLM path (none reuses an answer)
            "DRIFTREC_API_RATE_PER_MINUTE": "0",
            "DRIFTREC_CHAT_MODE": "plan",
        }
        ingest_movielens(env)
        log = open(Path(data) / "serve.log", "w")  # noqa: SIM115
        server = subprocess.Popen(
            [bin_dir / "driftrec", "serve", "--port", str(api_port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{api_port}"
        try:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok":
                        break
                time.sleep(0.5)
            else:
                raise SystemExit("driftrec serve did not come up: " + (Path(data) / "serve.log").read_text()[-2000:])
            users = [str(u) for u in range(1, 944)]
            seen = seen_items(Path(data))
            started = time.perf_counter()
            results = asyncio.run(load(url, users, args.requests, args.k))
            wall = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=60)
            llm.should_exit = True
    latencies = [r[1] for r in results]
    answers = [(u, a) for u, _, status, a in results if a is not None]
    invalid = [
        u
        for u, a in answers
        if len(a["items"]) != args.k
        or len({i["item"]["id"] for i in a["items"]}) != args.k
        or {i["item"]["id"] for i in a["items"]} & seen.get(u, set())
    ]
    reasons = collections.Counter((a.get("error") or "")[:60] for _, a in answers if a["degraded"])
    out = {
        "requests": args.requests,
        "deadline_s": args.deadline,
        "llm_delay_s": args.llm_delay,
        "llm_slots": args.llm_slots,
        "wall_s": round(wall, 2),
        "status": dict(collections.Counter(r[2] for r in results)),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "max_s": round(max(latencies), 3),
        "within_deadline_plus_10pct": percentile(latencies, 99) <= args.deadline * 1.1,
        "server_p50_s": round(statistics.median(a["seconds"] for _, a in answers), 3) if answers else None,
        "server_p99_s": round(percentile([a["seconds"] for _, a in answers], 99), 3) if answers else None,
        "ranked_by_llm": sum(1 for _, a in answers if not a["degraded"]),
        "degraded": sum(1 for _, a in answers if a["degraded"]),
        "degraded_reasons": dict(reasons.most_common(5)),
        "invalid_answers": len(invalid),
        "machine": f"{os.cpu_count()} cores",
    }
    return out, args.json_out


def seen_items(data: Path) -> dict[str, set[str]]:
    """Every item each user has rated (an answer must contain none of them)."""
    import sqlite3

    seen: dict[str, set[str]] = collections.defaultdict(set)
    with contextlib.closing(sqlite3.connect(data / "memory.db")) as conn:
        for user, item in conn.execute("SELECT user, item FROM events"):
            seen[user].add(item)
    return seen


if __name__ == "__main__":
    result, json_out = main()
    print(json.dumps(result, indent=2))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
