"""Candidate retrieval: Chroma stores, offline embeddings, candidate sources and fusion.

Works with no LLM at all (it never imports ``driftrec.llm``).
"""

from driftrec.retrieval.candidates import CandidateGenerator
from driftrec.retrieval.embeddings import Embedder, make_embedder
from driftrec.retrieval.fusion import rrf
from driftrec.retrieval.sources import CoOccurrenceIndex, PopularityIndex, RetrievalRequest, VectorSource
from driftrec.retrieval.store import ItemIndex, chroma_client

__all__ = [
    "CandidateGenerator",
    "CoOccurrenceIndex",
    "Embedder",
    "ItemIndex",
    "PopularityIndex",
    "RetrievalRequest",
    "VectorSource",
    "chroma_client",
    "make_embedder",
    "rrf",
]
