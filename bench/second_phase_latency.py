"""Latency of `Recommender.recommend()` with the second phase served (issue 14: p50 <= 1 s warm with LLM
features on the embedded model), beside the learned order alone.

MovieLens-100K catalog and all 100,000 ratings as events in a fresh data dir; `train_ranker` with the
second phase (`--train-users` users' learned top `--window` judged by the configured served model, the
embedded one unless `DRIFTREC_LLM_BASE_URL` is set); then, for `--users` other users one at a time (answer
reuse off, LLM response cache off):

- learned: the learned order alone (no LLM call), as served without a second phase;
- cold: the user's first request with the phase (nothing of the prompt in vLLM's prefix cache);
- repeat: the same request again (the whole prompt cached: the floor of one call per request);
- then answer reuse on (`DRIFTREC_RANKING_ANSWER_CACHE_S=60`, the default) and, per user, a new event (they
  rate their top item) with the answer refreshed in the background (`DRIFTREC_RANKING_REFRESH_AFTER_WRITE`):
  refresh: from the write to the answer kept; after refresh: the next request once it is kept; other k:
  then a request for k=20 (not the refreshed request: its prompt is in vLLM's cache); at once: a second
  event and the request straight after it, the refresh still in flight (the request computes its own).

Reported: p50/p95 in ms, the phase's card (users, early-stopping NDCG@10 against the learned order), how
many answers degraded, the training time. Run:
`.venv/bin/python bench/second_phase_latency.py [--train-users 200] [--users 20] [--window 20] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from common import machine, movielens_data, percentile, report
from driftrec import Recommender, load_settings
from driftrec.agent.answers import RecentAnswers
from driftrec.models import Action, Interaction


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 1), "p95_ms": round(percentile(values, 95), 1)}


async def timed(rec: Recommender, user: str, k: int = 10) -> tuple[float, bool, str]:
    started = time.perf_counter()
    answer = await rec.recommend(user, k=k)
    return (time.perf_counter() - started) * 1000, answer.degraded, answer.ranking


async def rate_top(rec: Recommender, user: str, rank: int) -> None:
    """The user rates the item at ``rank`` of their latest answer: a live event (it schedules a refresh)."""
    latest = rec.last_recommendations(user)
    assert latest is not None
    item = latest.items[rank].item.id
    await rec.observe([Interaction(user=user, item=item, action=Action.RATE, rating=5.0, timestamp=datetime.now(UTC))])


async def after_events(rec: Recommender, asked: list[str]) -> dict[str, object]:
    """Answer reuse on; per user a new event and the refreshed answer (see the module's docstring)."""
    rec.answers = RecentAnswers(ttl_s=60.0, max_users=10_000)
    refresh, ready, other_k, at_once, degraded, reused = [], [], [], [], 0, 0
    for user in asked:
        await rec.recommend(user, k=10)  # kept: what the user saw
        started = time.perf_counter()
        await rate_top(rec, user, 0)
        await rec.refresher.idle()
        refresh.append((time.perf_counter() - started) * 1000)
        hits = rec.answers.hits
        for into, k in ((ready, 10), (other_k, 20)):
            ms, was_degraded, _ = await timed(rec, user, k)
            into.append(ms)
            degraded += was_degraded
        reused += rec.answers.hits - hits
        await rate_top(rec, user, 1)
        ms, was_degraded, _ = await timed(rec, user)
        at_once.append(ms)
        degraded += was_degraded
        await rec.refresher.idle()
    return {
        "refresh_write_to_kept": summary(refresh),
        "after_refresh": summary(ready),
        "after_refresh_other_k": summary(other_k),
        "at_once_refresh_in_flight": summary(at_once),
        "reused_after_refresh": reused,
        "degraded_after_events": degraded,
        "refreshes": {"done": rec.refresher.done, "failed": rec.refresher.failed},
    }


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
        events = await after_events(rec, asked)
        model, precision = rec.llm.client.model, rec.llm.client.precision
    return {
        "model": model,
        "window": window,
        "users": users,
        "learned": summary(learned),
        "second_phase_cold": summary(cold),
        "second_phase_repeat": summary(repeat),
        "degraded_answers": degraded,
        **events,
        "modes": sorted(modes),
        "train_s": round(train_s, 1),
        "second_phase": asdict(phase.card),
        "machine": machine(precision),
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
