"""How the memory store and the candidate indexes grow from 1x to 100x MovieLens-100K (issue 16).

A synthetic log with drifting users (`driftrec.eval.synthetic`) at each size is written through the
event store's API (`EventStore.append`, validated `Interaction` models, batches of 10,000) into SQLite and
into PostgreSQL (a real server from the `pgserver` wheel, on this machine's disk); then, in a fresh child
process per backend, the co-occurrence and popularity indexes are fitted from the store's streaming read
(time, peak RSS of that process), and 10,000 further events are taken in incrementally; then the indexes are
saved as the snapshot later processes load instead of fitting, and loaded back (time, file size).

`--bulk-batch 100000` also times a bulk import into a second, fresh store (that many events per
transaction; `driftrec ingest` writes a dataset's ratings in one append): random inserts into the
`(user, ts)` index dirty a page per event, and a page is written once per transaction however many events
it took, so larger transactions write less per event.

Run: `.venv/bin/python bench/scale.py [--sizes 1 10] [--backends sqlite postgresql] [--bulk-batch N] [--json-out FILE]`;
`--plot FILE...` draws the growth curves (docs/results/scale-growth.png).
Sizes are multiples of MovieLens-100K: 1 = 100k events, 10 = 1M, 100 = 10M events / 1M users / ~100k items.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from driftrec.eval.synthetic import SyntheticLog, SyntheticSpec
from driftrec.memory.db import open_database_url
from driftrec.memory.events import EventStore
from driftrec.retrieval.candidates import Indexes
from driftrec.retrieval.log import EventColumns, UserCodes
from driftrec.retrieval.snapshot import Snapshot, SnapshotDir, catalog_key
from driftrec.retrieval.sources import CoOccurrenceIndex, PopularityIndex, TransitionIndex

BATCH = 10_000
UPDATE = 10_000


def ingest(url: str | None, folder: Path, log: SyntheticLog, batch: int = BATCH) -> dict[str, float]:
    """Write the whole log through EventStore.append, ``batch`` events per call (one transaction each);
    events per second, generation time excluded."""
    store = EventStore(open_database_url(url, folder))
    spent, written, first = 0.0, 0, 0
    for users, items, times in log.chunks(batch):
        events = log.interactions(users, items, times, first_id=first)
        first += len(events)
        started = time.perf_counter()
        written += asyncio.run(store.append(events))
        spent += time.perf_counter() - started
    return {"events": written, "batch": batch, "seconds": round(spent, 1), "events_per_s": round(written / spent)}


def fresh_store(tmp: Path, backend: str, factor: float, server: object, tag: str = "") -> tuple[Path, str | None]:
    """An empty folder, and for PostgreSQL a new database on the server: (folder, URL or None for SQLite)."""
    name = f"scale_{str(factor).replace('.', '_')}{'_' + tag if tag else ''}"
    folder = tmp / name / backend
    folder.mkdir(parents=True)
    if backend != "postgresql":
        return folder, None
    import psycopg

    uri = server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return folder, uri.replace("/postgres?", f"/{name}?")


def fit(url: str | None, folder: Path, spec: SyntheticSpec) -> dict[str, float]:
    """In this (fresh) process: read the log as columns, fit the indexes (co-occurrence, transitions,
    popularity), then take in UPDATE new events."""
    log = SyntheticLog(spec)
    ids = [item.id for item in log.catalog()]
    positions = {item: i for i, item in enumerate(ids)}
    store = EventStore(open_database_url(url, folder))
    users = UserCodes()
    started = time.perf_counter()
    columns = store.columns_blocking(positions, users)
    read_s = time.perf_counter() - started
    indexes = Indexes(CoOccurrenceIndex(), TransitionIndex(), PopularityIndex()).fit_columns(columns, ids, len(users))
    cooc = indexes.cooc
    fit_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # incremental: UPDATE events later than the whole log
    extra = next(SyntheticLog(SyntheticSpec(**{**spec.__dict__, "events": UPDATE, "seed": spec.seed + 7})).chunks())
    shifted = (extra[0], extra[1], extra[2] + spec.days * 86400)
    new = EventColumns.from_rows(
        ((len(columns) + n + 1, f"u{u}", f"s{i}", t) for n, (u, i, t) in enumerate(zip(*shifted, strict=True))),
        positions,
        users,
    )
    started = time.perf_counter()
    indexes.update(new, len(users))
    update_s = time.perf_counter() - started
    # the saved snapshot every later process starts from instead of fitting (retrieval/snapshot.py)
    snapshots = SnapshotDir(folder / "indexes")
    params = indexes.params()
    snapshot = Snapshot("bench", 0, columns.last_seq, catalog_key(ids), params, indexes, users)
    started = time.perf_counter()
    path = snapshots.save(snapshot)
    save_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded = snapshots.load("bench", 0, ids, params)
    load_s = time.perf_counter() - started
    assert loaded is not None and loaded.indexes.cooc.base.nnz == (cooc.base + cooc.delta).nnz
    return {
        "read_s": round(read_s, 1),
        "fit_s": round(fit_s, 1),
        "peak_rss_mb": round(peak_mb),
        "cooc_nnz": int(cooc.base.nnz),
        "update_10k_s": round(update_s, 3),
        "snapshot_save_s": round(save_s, 1),
        "snapshot_load_s": round(load_s, 1),
        "snapshot_mb": round(path.stat().st_size / 2**20),
    }


def plot(results: list[Path], out: Path) -> Path:
    """Growth curves from result files: ingest rate, index fit time and peak memory against events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for path in results for row in json.loads(path.read_text())["rows"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("ingest (events/s)", lambda r: r["ingest"]["events_per_s"]),
        ("index fit from the store (s)", lambda r: r["index"]["fit_s"]),
        ("peak RSS of the fit (MB)", lambda r: r["index"]["peak_rss_mb"]),
    ]
    for ax, (title, value) in zip(axes, panels, strict=True):
        for backend in sorted({r["backend"] for r in rows}):
            mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["ingest"]["events"])
            ax.plot([r["ingest"]["events"] for r in mine], [value(r) for r in mine], marker="o", label=backend)
        ax.set_xscale("log")
        ax.set_xlabel("events in the log")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("driftrec memory store and candidate indexes, 1x to 100x MovieLens-100K (2 cores, 24 GB)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--bulk-batch",
        type=int,
        default=0,
        help="also time a bulk import (this many events per transaction, as `driftrec ingest` writes a whole file) "
        "into a second, fresh store per backend",
    )
    parser.add_argument("--plot", type=Path, nargs="+", help="draw growth curves from these result files")
    parser.add_argument("--plot-out", type=Path, default=Path("docs/results/scale-growth.png"))
    parser.add_argument("--fit-only", nargs=3, metavar=("URL", "FOLDER", "FACTOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plot:
        print(plot(args.plot, args.plot_out))
        return
    if args.fit_only:  # the child process
        url, folder, factor = args.fit_only
        print(json.dumps(fit(None if url == "-" else url, Path(folder), SyntheticSpec.scaled(float(factor)))))
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="driftrec-scale-", dir=os.environ.get("DRIFTREC_BENCH_DIR")) as tmp:
        server = None
        if "postgresql" in args.backends:
            import pgserver

            server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        try:
            for factor in args.sizes:
                spec = SyntheticSpec.scaled(factor)
                log = SyntheticLog(spec)
                for backend in args.backends:
                    folder, url = fresh_store(Path(tmp), backend, factor, server)
                    written = ingest(url, folder, log)
                    child = subprocess.run(
                        [sys.executable, __file__, "--fit-only", url or "-", str(folder), str(factor)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    row = {
                        "size": f"{factor:g}x",
                        "items": spec.items,
                        "users": spec.users,
                        "backend": backend,
                        "ingest": written,
                        "index": json.loads(child.stdout.strip().splitlines()[-1]),
                    }
                    if args.bulk_batch:
                        bulk_folder, bulk_url = fresh_store(Path(tmp), backend, factor, server, "bulk")
                        row["bulk_ingest"] = ingest(bulk_url, bulk_folder, log, args.bulk_batch)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            if server is not None:
                server.cleanup()
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"machine": "2 cores, 24 GB, no GPU", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
