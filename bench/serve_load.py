"""recommend() over HTTP under closed-loop load, one or several API processes, SQLite or PostgreSQL.

A fresh data dir with the MovieLens-100K catalog and all 100,000 ratings as events (`driftrec ingest
movielens-100k --events`); `driftrec serve --workers W` with no LLM (`DRIFTREC_LLM_ENABLED=false`: fusion
or learned order, what the service answers when no model is asked) on SQLite or on PostgreSQL (a real
server from the `pgserver` wheel; the events copied into it, then `VACUUM ANALYZE` as autovacuum would
soon do in a running deployment; `--no-vacuum` serves the table as copied). C clients on loopback, each
sending its next request when the last one is answered (a random user of the 943, k=10), for D seconds after a
warm-up. The load generator shares the 2 cores. Reported: requests per second, p50/p95/p99 in ms, errors,
and per server the answers reused out of the repeat checks made over its life (its processes log them as
they stop). `--answer-cache-s 60 0` serves each configuration with answer reuse and without.
`--write-share S` mixes writes in: a share S of requests are a click (a random user, a random item), and the
request sent next asks for that user's recommendations, which their new event makes a computed one (a user
who acts and looks again); the latency percentiles are over both kinds.
Issue 16's target: at 50 clients, >= 1,000 req/s with p95 <= 50 ms and p99 <= 100 ms, two processes.
`--spread even` serves W one-process servers on their own ports, one wrk each (a load balancer spreading the
connections evenly), instead of `--workers W` processes, whose split of wrk's connections (reported as
`connections_per_process`) is the kernel's hash over their sockets on Linux — before 2026-12-04 an accept race
on one shared socket, 38/12 and 50/0 measured — and whose busier process sets the tail.

The load generator is `wrk` (C; `apt-get install wrk`) when it is installed — it leaves the cores to the
servers — else a Python httpx client (which itself takes a good share of the 2 cores).
`--dataset synthetic100` (or `synthetic10`) serves the 100x (10x) synthetic log instead
(`driftrec.eval.synthetic`: ~100k items, 1M users, 10M events at 100x; item vectors synthetic — a genre
direction plus noise, not embedded titles: the vector source is muted by the default fusion weights, and
embedding 100k titles would measure the embedder, not serving).
Run: `.venv/bin/python bench/serve_load.py [--workers 1 2] [--clients 1 10 50] [--seconds 20]
[--backends sqlite postgresql] [--dataset movielens|synthetic10|synthetic100] [--generator wrk|python]
[--no-access-log] [--write-share S] [--answer-follows-indexes] [--no-vacuum] [--spread accept|even] [--data-dir DIR]
[--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx

from common import percentile
from driftrec.llm.runtime import free_port
from driftrec.memory.db import SqliteDatabase, open_database_url
from driftrec.memory.events import EventStore

MOVIELENS_ITEMS = 1682  # item ids 1..1682: what --write-share clicks


def reuse_counts(log: Path) -> dict[str, int]:
    """Answers reused and repeat checks made, summed over the server's processes (from their last log lines)."""
    hits = checks = 0
    for match in re.finditer(r"answers reused: (\d+) of (\d+) repeat checks", log.read_text(errors="replace")):
        hits, checks = hits + int(match[1]), checks + int(match[2])
    return {"reused": hits, "checked": checks}


@contextlib.contextmanager
def serving(env: dict[str, str], workers: int, log: Path) -> Iterator[str]:
    port = free_port()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftrec.cli", "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=out,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(log.read_text()[-2000:])
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                time.sleep(0.5)
            yield base
        finally:
            process.terminate()
            process.wait(60)


@contextlib.contextmanager
def serving_each(env: dict[str, str], processes: int, log: Path) -> Iterator[list[str]]:
    """``processes`` servers of one process each, every one on its own port (what a load balancer in front
    spreads connections over); their logs go to ``log``, one after another."""
    with contextlib.ExitStack() as stack:
        bases = [stack.enter_context(serving(env, 1, log.with_suffix(f".{n}.log"))) for n in range(processes)]
        try:
            yield bases
        finally:
            stack.close()  # the servers stop (and log their reuse counts) before their logs are joined
            log.write_text("".join(log.with_suffix(f".{n}.log").read_text(errors="replace") for n in range(processes)))


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"k": 10}'
local pending = nil
request = function()
  if pending == nil and math.random() < %(write_share)f then
    pending = "%(prefix)s" .. math.random(%(low)d, %(high)d)
    local click = '{"item": "' .. math.random(1, %(items)d) .. '", "signal": "click"}'
    return wrk.format(nil, "/v1/users/" .. pending .. "/feedback", nil, click)
  end
  local user = pending or ("%(prefix)s" .. math.random(%(low)d, %(high)d))
  pending = nil
  return wrk.format(nil, "/v1/users/" .. user .. "/recommendations")
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.duration))
  local q = {}
  for p = 1, 999 do q[#q + 1] = latency:percentile(p / 10) end
  io.write("QUANTILES " .. table.concat(q, " ") .. "\\n")
end
"""


def wrk_script(folder: Path, users: tuple[str, int, int], write_share: float) -> Path:
    """The Lua script every wrk run here loads: random users (``users``: prefix, lowest, highest), a share of
    clicks each followed by that user's request, the RESULT and QUANTILES lines at the end."""
    prefix, low, high = users
    script = folder / "recommend.lua"
    fields = {"prefix": prefix, "low": low, "high": high, "items": MOVIELENS_ITEMS, "write_share": write_share}
    script.write_text(WRK_SCRIPT % fields)
    return script


def busy_cpu_s() -> float:
    """The machine's CPU seconds spent busy so far, all cores (``/proc/stat``; 0 where there is none): over a
    run, divided by its requests, what a request costs the machine — the servers and the load generator —
    steadier than the throughput when the VM's speed drifts."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wrk_line(out: str, name: str) -> list[int]:
    """The numbers of the line the script wrote under ``name``."""
    return [int(x) for x in next(line for line in out.splitlines() if line.startswith(name)).split()[1:]]


def wrk_loop(
    base: str, clients: int, seconds: float, users: tuple[str, int, int], folder: Path, write_share: float = 0.0
) -> dict[str, float]:
    """The same closed loop from wrk (one thread, ``clients`` connections), after a 3 s warm-up run."""
    script = wrk_script(folder, users, write_share)
    subprocess.run(["wrk", "-t1", f"-c{clients}", "-d3s", "-s", str(script), base], capture_output=True, check=True)
    port = int(base.rsplit(":", 1)[1])
    closed_before = closed_by_servers(port)
    busy = busy_cpu_s()
    with subprocess.Popen(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "-s", str(script), base], stdout=subprocess.PIPE, text=True
    ) as run:
        time.sleep(seconds / 2)
        split = connections_per_process(port)
        out, _ = run.communicate()
    busy = busy_cpu_s() - busy
    closed = closed_by_servers(port) - closed_before if closed_before >= 0 else -1
    if run.returncode:
        raise RuntimeError(f"wrk exited with {run.returncode}")
    requests, status_errors, socket_errors, p50, p95, p99, duration_us = wrk_line(out, "RESULT")
    return {
        "clients": clients,
        "requests": requests,
        "req_per_s": round((requests - status_errors) / (duration_us / 1e6), 1),
        "p50_ms": round(p50 / 1000, 1),
        "p95_ms": round(p95 / 1000, 1),
        "p99_ms": round(p99 / 1000, 1),
        "errors": status_errors + socket_errors,
        "connections_per_process": split,
        "connections_closed_by_servers": closed,
        "machine_cpu_ms_per_request": round(1000 * busy / max(requests, 1), 3),
    }


def wrk_spread(
    bases: list[str], clients: int, seconds: float, users: tuple[str, int, int], folder: Path, write_share: float = 0.0
) -> dict[str, object]:
    """The closed loop with the connections spread evenly: one wrk per server (its own port), ``clients /
    len(bases)`` connections each, all at once. The latency percentiles are those of the requests of all of
    them (each wrk's distribution, as 999 quantiles weighted by its requests, merged)."""
    script = wrk_script(folder, users, write_share)
    share = [clients // len(bases) + (n < clients % len(bases)) for n in range(len(bases))]

    def run(duration: str) -> list[str]:
        started = [
            subprocess.Popen(
                ["wrk", "-t1", f"-c{c}", f"-d{duration}", "-s", str(script), b], stdout=subprocess.PIPE, text=True
            )
            for b, c in zip(bases, share, strict=True)
        ]
        outs = [p.communicate()[0] for p in started]
        if any(p.returncode for p in started):
            raise RuntimeError("wrk failed")
        return outs

    run("3s")
    busy = busy_cpu_s()
    outs = run(f"{seconds:g}s")
    busy = busy_cpu_s() - busy
    requests = errors = 0
    rate = 0.0
    weighted: list[tuple[float, float]] = []
    for out in outs:
        got, quantiles = wrk_line(out, "RESULT"), wrk_line(out, "QUANTILES")
        requests += got[0]
        errors += got[1] + got[2]
        rate += (got[0] - got[1]) / (got[6] / 1e6)
        weighted += [(q / 1000, got[0] / len(quantiles)) for q in quantiles]
    weighted.sort()
    total = sum(w for _, w in weighted)

    def merged(p: float) -> float:
        seen = 0.0
        for value, weight in weighted:
            seen += weight
            if seen >= p / 100 * total:
                return round(value, 1)
        return round(weighted[-1][0], 1)

    return {
        "clients": clients,
        "requests": requests,
        "req_per_s": round(rate, 1),
        "p50_ms": merged(50),
        "p95_ms": merged(95),
        "p99_ms": merged(99),
        "errors": errors,
        "connections_per_process": share,
        "machine_cpu_ms_per_request": round(1000 * busy / max(requests, 1), 3),
    }


def server_sockets(state: str, port: int, *options: str) -> list[str] | None:
    """``ss``'s lines for the serving side's TCP sockets on ``port`` in ``state``; None when ``ss`` is not there."""
    try:
        run = subprocess.run(["ss", "-Htn", *options, "state", state, "sport", "=", f":{port}"], capture_output=True)
    except FileNotFoundError:
        return None
    return run.stdout.decode().splitlines()


def connections_per_process(port: int) -> list[int]:
    """How the load generator's connections are split over the serving processes (the busier process sets
    the tail), most first; empty when ``ss`` is not there."""
    lines = server_sockets("established", port, "-p") or []
    return sorted(Counter(re.findall(r"pid=(\d+)", "\n".join(lines))).values(), reverse=True)


def closed_by_servers(port: int) -> int:
    """Connections the serving processes closed in the last minute (the closing side waits in TIME_WAIT for
    60 s): with ``--workers``, the processes shed their excess connections to even the split
    (server/balance.py); -1 when ``ss`` is not there."""
    lines = server_sockets("time-wait", port)
    return -1 if lines is None else len(lines)


def synthetic_data(data: Path, factor: float) -> tuple[str, int, int]:
    """A data dir with the synthetic catalog (synthetic vectors) and log at ``factor`` x MovieLens; returns
    how the load generator names users (prefix, lowest, highest)."""
    import numpy as np

    from driftrec.agent.recommender import save_catalog
    from driftrec.config import load_settings
    from driftrec.eval.synthetic import SyntheticLog, SyntheticSpec
    from driftrec.retrieval.store import open_item_index

    spec = SyntheticSpec.scaled(factor)
    log = SyntheticLog(spec)
    settings = load_settings(data_dir=data)
    catalog = log.catalog()
    save_catalog(settings, catalog)
    rng = np.random.default_rng(0)
    index = asyncio.run(open_item_index(settings))
    dim = index.embedder.dim
    directions = rng.normal(size=(18, dim))
    vectors = directions[log.item_genre] + 0.5 * rng.normal(size=(len(catalog), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    written = {item.id: v.astype(np.float32) for item, v in zip(catalog, vectors, strict=True)}
    asyncio.run(index.upsert(catalog, vectors=written))
    store = EventStore(SqliteDatabase(data / "memory.db"))
    first = 0
    for users, items, times in log.chunks(50_000):
        store.append_blocking(log.interactions(users, items, times, first_id=first))
        first += len(users)
    return ("u", 0, spec.users - 1)


async def closed_loop(
    base: str, clients: int, seconds: float, warmup: float = 3.0, write_share: float = 0.0
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + seconds

        async def client(n: int) -> None:
            nonlocal errors
            rng = random.Random(n)
            pending: int | None = None
            while (now := time.perf_counter()) < end:
                if pending is None and rng.random() < write_share:
                    pending = rng.randint(1, 943)
                    click = {"item": str(rng.randint(1, MOVIELENS_ITEMS)), "signal": "click"}
                    answer = await http.post(f"/v1/users/{pending}/feedback", json=click)
                    wrote = True
                else:
                    user, pending, wrote = pending or rng.randint(1, 943), None, False
                    answer = await http.post(f"/v1/users/{user}/recommendations", json={"k": 10})
                done = time.perf_counter()
                if now >= measure_from:
                    if answer.status_code == 200 and (wrote or len(answer.json()["items"]) == 10):
                        latencies.append((done - now) * 1000)
                    else:
                        errors += 1

        await asyncio.gather(*(client(n) for n in range(clients)))
    return {
        "clients": clients,
        "requests": len(latencies) + errors,
        "req_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--dataset", choices=["movielens", "synthetic10", "synthetic100"], default="movielens")
    parser.add_argument("--generator", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument(
        "--answer-cache-s",
        type=float,
        nargs="+",
        default=[60.0],
        help="DRIFTREC_RANKING_ANSWER_CACHE_S per server (0: every request computed); one server each",
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="DRIFTREC_API_ACCESS_LOG=false: no log line per request (a proxy in front logs them)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the prepared data dir here and reuse it when it was prepared for the same --dataset "
        "(the 100x log takes minutes to write); default: a temporary dir",
    )
    parser.add_argument(
        "--write-share",
        type=float,
        default=0.0,
        help="this share of requests are a click (POST feedback: a random user, a random item), and the next "
        "request sent asks for that user's recommendations (computed: their state moved); MovieLens only",
    )
    parser.add_argument(
        "--answer-follows-indexes",
        action="store_true",
        help="DRIFTREC_RANKING_ANSWER_FOLLOWS_INDEXES=true: any user's event ends every kept answer (the behaviour "
        "before 2026-12-04)",
    )
    parser.add_argument(
        "--no-vacuum",
        action="store_true",
        help="PostgreSQL: serve the events table as copied, without VACUUM ANALYZE (heap reads where a vacuumed "
        "table answers the per-user state from the index alone)",
    )
    parser.add_argument(
        "--spread",
        choices=["accept", "even"],
        default="accept",
        help="accept: `driftrec serve --workers W`, whose processes accept from a socket each (Linux: the kernel "
        "hashes connections to them; elsewhere one shared socket); even: W servers of one process on their own "
        "ports, one wrk each with clients/W connections (a load balancer spreading connections evenly; wrk only)",
    )
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if not 0 <= args.write_share < 1:
        parser.error("--write-share must be in [0, 1)")
    if args.spread == "even" and args.generator != "wrk":
        parser.error("--spread even runs one wrk per server: --generator wrk only")
    if args.write_share and args.dataset != "movielens":
        parser.error("--write-share clicks MovieLens items (ids 1-1682): --dataset movielens only")
    if args.data_dir and any(args.data_dir.glob("*")) and not (args.data_dir / f".serve-load-{args.dataset}").exists():
        parser.error(f"--data-dir {args.data_dir} holds something not prepared by this script for {args.dataset}")
    if args.dataset.startswith("synthetic") and args.backends != ["sqlite"]:
        parser.error("--dataset synthetic* serves SQLite only (this script copies events into PostgreSQL in memory)")

    rows = []
    with tempfile.TemporaryDirectory(prefix="driftrec-load-") as tmp:
        data = args.data_dir.resolve() if args.data_dir else Path(tmp) / "data"
        prepared = data / f".serve-load-{args.dataset}"  # written last: a dir without it is prepared again
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTREC_")} | {
            "DRIFTREC_DATA_DIR": str(data),
            "DRIFTREC_LLM_ENABLED": "false",
            "DRIFTREC_API_RATE_PER_MINUTE": "0",
            "DRIFTREC_MEMORY_UPKEEP": "false",
            "DRIFTREC_API_ACCESS_LOG": str(not args.no_access_log).lower(),
            "DRIFTREC_RANKING_ANSWER_FOLLOWS_INDEXES": str(args.answer_follows_indexes).lower(),
        }
        if "DRIFTREC_CACHE_DIR" in os.environ:
            base_env["DRIFTREC_CACHE_DIR"] = os.environ["DRIFTREC_CACHE_DIR"]
        if prepared.exists():
            users = tuple(json.loads(prepared.read_text()))
            print(f"reusing {data}, prepared for {args.dataset}", flush=True)
        elif args.dataset == "movielens":
            subprocess.run(
                [sys.executable, "-m", "driftrec.cli", "ingest", "movielens-100k", "--events"], env=base_env, check=True
            )
            users = ("", 1, 943)
        else:
            started = time.perf_counter()
            users = synthetic_data(data, float(args.dataset.removeprefix("synthetic")))
            print(f"{args.dataset} data dir ready in {time.perf_counter() - started:.0f} s", flush=True)
        prepared.write_text(json.dumps(users))
        server = None
        try:
            for backend in args.backends:
                env = dict(base_env)
                if backend == "postgresql":
                    import pgserver

                    server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
                    url = server.get_uri()
                    events = EventStore(SqliteDatabase(data / "memory.db")).all_blocking()
                    EventStore(open_database_url(url, data)).append_blocking(events)
                    if not args.no_vacuum:  # what autovacuum does soon after a bulk load in a running deployment
                        import psycopg

                        with psycopg.connect(url, autocommit=True) as conn:
                            conn.execute("VACUUM ANALYZE events")
                    env["DRIFTREC_DATABASE_URL"] = url
                for workers, reuse_s in itertools.product(args.workers, args.answer_cache_s):
                    env["DRIFTREC_RANKING_ANSWER_CACHE_S"] = str(reuse_s)
                    log = Path(tmp) / f"serve-{backend}-{workers}-{reuse_s:g}.log"
                    served_rows = []
                    with (
                        serving_each(env, workers, log) if args.spread == "even" else serving(env, workers, log)
                    ) as served:
                        for clients in args.clients:
                            if isinstance(served, list):
                                measured = wrk_spread(served, clients, args.seconds, users, Path(tmp), args.write_share)
                            elif args.generator == "wrk":
                                measured = wrk_loop(served, clients, args.seconds, users, Path(tmp), args.write_share)
                            else:
                                measured = asyncio.run(
                                    closed_loop(served, clients, args.seconds, write_share=args.write_share)
                                )
                            row = {
                                "dataset": args.dataset,
                                "generator": args.generator,
                                "backend": backend,
                                "workers": workers,
                                "answer_cache_s": reuse_s,
                                "access_log": not args.no_access_log,
                                "write_share": args.write_share,
                                "answer_follows_indexes": args.answer_follows_indexes,
                                "vacuumed": backend == "postgresql" and not args.no_vacuum,
                                "spread": args.spread,
                            } | measured
                            print(json.dumps(row), flush=True)
                            served_rows.append(row)
                    reused = reuse_counts(log)  # the processes log them as they stop
                    for row in served_rows:
                        row["reused_over_server_lifetime"] = reused
                    rows.extend(served_rows)
        finally:
            if server is not None:
                server.cleanup()
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(
            json.dumps({"machine": "2 cores, 24 GB, no GPU; client on the same cores", "rows": rows}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
