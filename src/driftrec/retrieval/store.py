"""ChromaDB: the client (embedded or a `chroma run` server) and the ``items`` collection.

Chroma's Python client is synchronous; every call here runs in a worker thread so the event loop
never blocks. Writes are upserts by item id in batches no larger than the server accepts, so
re-ingesting a catalog never duplicates anything.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, cast

import chromadb
import httpx
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ClientSettings

from driftrec.config import ChromaSettings, Settings
from driftrec.models import Filters, Item
from driftrec.retrieval.embeddings import DriftrecEmbeddingFunction, Embedder, make_embedder


def chroma_client(chroma: ChromaSettings) -> ClientAPI:
    """An embedded PersistentClient in the data dir, or an HttpClient to a `chroma run` server."""
    client_settings = ClientSettings(anonymized_telemetry=False, allow_reset=False)
    if chroma.mode == "http":
        if chroma.ssl_ca is not None:
            client_settings.chroma_server_ssl_verify = str(chroma.ssl_ca)
        headers = dict(chroma.headers)
        if chroma.auth_token is not None:
            headers["Authorization"] = f"Bearer {chroma.auth_token.get_secret_value()}"
        return chromadb.HttpClient(
            host=chroma.host,
            port=chroma.port,
            ssl=chroma.ssl,
            headers=headers or None,
            settings=client_settings,
            tenant=chroma.tenant,
            database=chroma.database,
        )
    assert chroma.path is not None
    chroma.path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(chroma.path), settings=client_settings)


def collection_name(chroma: ChromaSettings, kind: str, embedder: Embedder) -> str:
    """``<prefix><kind>-<embedder>``: a collection never mixes embedders (their vectors are incomparable)."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", f"{kind}-{embedder.name}").strip("-").lower()
    return f"{chroma.prefix}{slug}"[:63]


class VectorStoreUnavailable(RuntimeError):
    """Chroma did not answer (a `chroma run` server down or unreachable). Recommendations degrade without
    the vector source; routes that need Chroma answer 503; the client reconnects by itself when it returns."""


_COLLECTION_CALLS = frozenset({"add", "count", "delete", "get", "modify", "peek", "query", "update", "upsert"})


class _Reachable:
    """A collection whose network failures raise VectorStoreUnavailable (one type for every caller to
    handle), whatever the HTTP library underneath raised."""

    def __init__(self, collection: Collection):
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._collection, name)
        if name not in _COLLECTION_CALLS:
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return found(*args, **kwargs)
            except httpx.TransportError as exc:
                raise VectorStoreUnavailable(f"Chroma did not answer ({type(exc).__name__}: {exc})") from exc

        return call


def open_collection(
    client: ClientAPI, name: str, embedder: Embedder, *, hnsw: Mapping[str, Any] | None = None
) -> Collection:
    """A cosine-space collection whose embedding function is ours (never Chroma's downloading default).
    ``hnsw`` adds index settings (applied when the collection is created)."""
    collection = client.get_or_create_collection(
        name,
        embedding_function=DriftrecEmbeddingFunction(embedder),  # type: ignore[arg-type]
        configuration={"hnsw": {"space": "cosine", **(hnsw or {})}},  # type: ignore[typeddict-item]
    )
    return cast(Collection, _Reachable(collection))


def genre_key(genre: str) -> str:
    """Metadata key of a genre flag: Chroma metadata is scalar, so each genre is its own boolean."""
    return "genre_" + re.sub(r"[^a-z0-9]+", "_", genre.lower()).strip("_")


def item_metadata(item: Item, popularity: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"title": item.title, "popularity": popularity}
    if item.year is not None:
        meta["year"] = item.year
    if item.genres:
        meta["genres"] = "|".join(item.genres)
    for genre in item.genres:
        meta[genre_key(genre)] = True
    for key, value in item.metadata.items():
        meta.setdefault(f"meta_{key}", value)
    return meta


def chroma_where(filters: Filters | None) -> dict[str, Any] | None:
    """The Chroma ``where`` clause for a filter (any of the genres, none of the excluded, year range)."""
    if filters is None:
        return None
    clauses: list[dict[str, Any]] = []
    if filters.genres:
        ors = [{genre_key(g): True} for g in filters.genres]
        clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
    clauses.extend({genre_key(g): {"$ne": True}} for g in filters.exclude_genres)
    if filters.year_min is not None:
        clauses.append({"year": {"$gte": filters.year_min}})
    if filters.year_max is not None:
        clauses.append({"year": {"$lte": filters.year_max}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class ItemIndex:
    """The ``items`` collection: readable item text, its embedding, filterable metadata.

    An unfiltered query over a catalog of at most ``exact_max_items`` items is answered exactly, by one
    matrix product over every stored vector, instead of by Chroma's approximate HNSW search: 0.07 ms at
    1,682 items and 0.7 ms at 20,000 (Chroma's call: ~2 ms; docs/benchmarks.md), and it removes the
    run-to-run movement of the approximate list's tail (a graph built twice from the same items answers
    differently). Filtered queries and larger catalogs go to Chroma. ``exact_max_items=0``: always Chroma.
    """

    def __init__(
        self,
        client: ClientAPI,
        embedder: Embedder,
        name: str = "items",
        *,
        exact_max_items: int = ChromaSettings.model_fields["exact_max_items"].default,
    ):
        self.client = client
        self.embedder = embedder
        self.collection = open_collection(client, name, embedder)
        self.exact_max_items = exact_max_items
        self._vectors: dict[str, np.ndarray] = {}
        self._matrix: tuple[list[str], np.ndarray] | None = None  # every item's id and unit vector, row by row
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()  # one full read of the vectors at a time, however many queries wait

    async def upsert(
        self,
        items: Iterable[Item],
        popularity: dict[str, int] | None = None,
        batch_size: int = 512,
        vectors: dict[str, np.ndarray] | None = None,
    ) -> int:
        """Write items, embedding only those that are new or whose text changed (unless ``vectors`` has
        them); an item whose text is unchanged but whose metadata moved gets its metadata updated without
        re-embedding. Returns how many items were embedded and written (unchanged ones count zero)."""
        items = list(items)
        popularity = popularity or {}
        limit = min(batch_size, await asyncio.to_thread(self.client.get_max_batch_size))
        written = 0
        async with self._write_lock:
            for start in range(0, len(items), limit):
                batch = items[start : start + limit]
                documents = {item.id: item.document() for item in batch}
                metadatas = {item.id: item_metadata(item, popularity.get(item.id, 0)) for item in batch}
                stored = await asyncio.to_thread(
                    self.collection.get, ids=list(documents), include=["documents", "metadatas"]
                )
                same_text = {
                    i for i, doc in zip(stored["ids"], stored["documents"] or [], strict=True) if doc == documents[i]
                }
                moved = [
                    i
                    for i, meta in zip(stored["ids"], stored["metadatas"] or [], strict=True)
                    if i in same_text and dict(meta or {}) != metadatas[i]
                ]
                if moved:
                    await asyncio.to_thread(self.collection.update, ids=moved, metadatas=[metadatas[i] for i in moved])
                fresh = [item for item in batch if item.id not in same_text]
                if not fresh:
                    continue
                texts = [documents[item.id] for item in fresh]
                if vectors is not None and all(item.id in vectors for item in fresh):
                    embedded = np.stack([vectors[item.id] for item in fresh])
                else:
                    embedded = await self.embedder.aembed_passages(texts)
                await asyncio.to_thread(
                    self.collection.upsert,
                    ids=[item.id for item in fresh],
                    documents=texts,
                    embeddings=list(embedded),
                    metadatas=[metadatas[item.id] for item in fresh],
                )
                # forget, not keep, what was sent: Chroma normalizes cosine vectors as it stores them (~1e-8
                # apart), so a process that had just written an item scored it off by an ulp from one that read
                # it — a fresh ingest and a reused one gave other vector scores, pools and learned rankers
                for item in fresh:
                    self._vectors.pop(item.id, None)
                self._matrix = None  # vectors changed: the exact-search matrix is read again on next use
                written += len(fresh)
        return written

    async def count(self) -> int:
        return await asyncio.to_thread(self.collection.count)

    async def vectors(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored embeddings of these items (cached in memory after the first read)."""
        wanted = [i for i in dict.fromkeys(ids) if i not in self._vectors]
        for start in range(0, len(wanted), 1000):
            got = await asyncio.to_thread(self.collection.get, ids=wanted[start : start + 1000], include=["embeddings"])
            for item_id, vector in zip(got["ids"], got["embeddings"], strict=True):
                self._vectors[item_id] = np.asarray(vector, dtype=np.float32)
        return {i: self._vectors[i] for i in ids if i in self._vectors}

    async def query(
        self,
        vector: np.ndarray,
        n: int,
        *,
        filters: Filters | None = None,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> list[tuple[str, float]]:
        """The ``n`` nearest items (cosine similarity), skipping ``exclude``, honouring ``filters``."""
        total = await self.count()
        if total == 0 or n <= 0:
            return []
        if filters is None and total <= self.exact_max_items:
            ids, matrix = await self._all_vectors(total)
            return await asyncio.to_thread(_nearest, ids, matrix, vector, n, exclude)
        fetch = min(total, n + len(exclude))
        result = await asyncio.to_thread(
            self.collection.query,
            query_embeddings=[vector.tolist()],
            n_results=fetch,
            where=chroma_where(filters),
            include=["distances"],
        )
        hits = [(i, 1.0 - d) for i, d in zip(result["ids"][0], result["distances"][0], strict=True) if i not in exclude]
        return hits[:n]

    async def _all_vectors(self, total: int) -> tuple[list[str], np.ndarray]:
        """Every stored item's unit vector, read once; read again when the count moved (another process
        added items) or this process wrote new vectors."""
        current = self._matrix
        if current is not None and len(current[0]) == total:
            return current
        async with self._read_lock:
            current = self._matrix
            if current is None or len(current[0]) != total:  # not read meanwhile by a query that waited first
                got = await asyncio.to_thread(self.collection.get, include=["embeddings"])
                rows = sorted(range(len(got["ids"])), key=lambda row: got["ids"][row])  # by id: ties break by id
                ids = [got["ids"][row] for row in rows]
                matrix = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(ids), -1)[rows]
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                current = self._matrix = (ids, matrix / np.where(norms == 0, 1.0, norms))
            return current

    async def search_text(
        self, text: str, n: int, *, filters: Filters | None = None, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[tuple[str, float]]:
        """Free-text search (embedded as a query, which e5 distinguishes from passages)."""
        vector = (await self.embedder.aembed_queries([text]))[0]
        return await self.query(vector, n, filters=filters, exclude=exclude)


def _nearest(
    ids: list[str], matrix: np.ndarray, vector: np.ndarray, n: int, exclude: set[str] | frozenset[str]
) -> list[tuple[str, float]]:
    """Exact cosine top ``n``: the best ``n + len(exclude)`` rows by partial sort, then ordered by score and
    row; rows are in id order, so ties break by id and the order is the same on every run."""
    norm = float(np.linalg.norm(vector))
    scores = matrix @ (np.asarray(vector, dtype=np.float32) / (norm or 1.0))
    keep = min(len(ids), n + len(exclude))  # enough to fill n after skipping every excluded item
    head = np.argpartition(-scores, keep - 1)[:keep] if keep < len(ids) else np.arange(len(ids))
    order = head[np.lexsort((head, -scores[head]))]  # by score, then row (= id order)
    hits: list[tuple[str, float]] = []
    for row in order.tolist():
        if ids[row] not in exclude:
            hits.append((ids[row], float(scores[row])))
            if len(hits) == n:
                break
    return hits


async def open_item_index(settings: Settings, kind: str = "items", backend: str | None = None) -> ItemIndex:
    """The configured embedder and the Chroma items collection for it (created if needed)."""
    embedder = await asyncio.to_thread(
        make_embedder, backend or settings.embedding.backend, settings.embedding.model, settings.embedding.base_url
    )
    client = await asyncio.to_thread(chroma_client, settings.chroma)
    name = collection_name(settings.chroma, kind, embedder)
    return await asyncio.to_thread(
        partial(ItemIndex, exact_max_items=settings.chroma.exact_max_items), client, embedder, name
    )


async def ensure_items(index: ItemIndex, items: Mapping[str, Item], popularity: Mapping[str, int]) -> int:
    """Bring the collection to the catalog when their sizes differ (only new or changed items are embedded;
    `driftrec ingest` checks every item); returns items embedded."""
    if await index.count() == len(items):
        return 0
    return await index.upsert(items.values(), dict(popularity))
