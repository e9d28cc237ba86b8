"""LLM re-ranking: listwise and verbalizer rankers, validation to exactly k items, bias control,
fusion with the retrieval order, explanations. Depends on prompts, llm and models (and retrieval's
pure fusion function); never on memory or the agent."""

from driftrec.ranking.context import LABELS, RankContext, RecentItem, build_context
from driftrec.ranking.explain import matched_interests
from driftrec.ranking.ranker import RankingPolicy, RankResult, Reranker
from driftrec.ranking.validate import RankErrors, repair, salvage

__all__ = [
    "LABELS",
    "RankContext",
    "RankErrors",
    "RankResult",
    "RankingPolicy",
    "RecentItem",
    "Reranker",
    "build_context",
    "matched_interests",
    "repair",
    "salvage",
]
