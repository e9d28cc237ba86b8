"""The async Recommender facade and the chat agent built on it (LangChain tools call the facade)."""

from driftrec.agent.recommender import InvalidEvent, NotStarted, Recommender, RecommenderError, UnknownItem
from driftrec.memory.db import StoreUnavailable
from driftrec.retrieval.store import VectorStoreUnavailable

__all__ = [
    "InvalidEvent",
    "NotStarted",
    "Recommender",
    "RecommenderError",
    "StoreUnavailable",
    "UnknownItem",
    "VectorStoreUnavailable",
]
