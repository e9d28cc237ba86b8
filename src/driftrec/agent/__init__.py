"""The async Recommender facade and the chat agent built on it (LangChain tools call the facade)."""

from driftrec.agent.recommender import NotStarted, Recommender, RecommenderError, UnknownItem

__all__ = ["NotStarted", "Recommender", "RecommenderError", "UnknownItem"]
