"""The chat agent's tools, as LangChain tools bound to one user; each is a thin call into the Recommender.

The same tool objects serve both chat modes: a capable model calls them itself (native tool calling),
a small one fills a plan and driftrec invokes the tool it names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from driftrec.models import Filters, Item, RecommendationList

if TYPE_CHECKING:
    from driftrec.agent.recommender import Recommender


QUERY_CHARS = 500  # the longest query a tool takes; a longer message is cut to it


class SearchArgs(BaseModel):
    text: str = Field(min_length=1, max_length=QUERY_CHARS, description="What to look for, in words.")
    genres: list[str] = Field(default_factory=list, description="Only movies with one of these genres.")
    exclude_genres: list[str] = Field(default_factory=list, description="No movie with any of these genres.")
    year_min: int | None = Field(default=None, ge=1800, le=2200)
    year_max: int | None = Field(default=None, ge=1800, le=2200)


class RecommendArgs(BaseModel):
    query: str | None = Field(default=None, max_length=QUERY_CHARS, description="What the user asks for, if anything.")
    genres: list[str] = Field(default_factory=list, description="Only movies with one of these genres.")
    exclude_genres: list[str] = Field(default_factory=list, description="No movie with any of these genres.")
    year_min: int | None = Field(default=None, ge=1800, le=2200, description="Released in or after this year.")
    year_max: int | None = Field(default=None, ge=1800, le=2200, description="Released in or before this year.")
    k: int = Field(default=5, ge=1, le=20)


class FeedbackArgs(BaseModel):
    item: str = Field(min_length=1, max_length=300, description="The movie's title or id.")
    signal: Literal["like", "dislike"]


class ExplainArgs(BaseModel):
    item: str = Field(min_length=1, max_length=300, description="The recommended movie's title or id.")


class NoArgs(BaseModel):
    pass


def render_recommendations(answer: RecommendationList) -> str:
    lines = [
        f"{r.rank}. {r.item.title} [{', '.join(r.item.genres)}] (id {r.item.id}): {r.reason}" for r in answer.items
    ]
    if answer.degraded:
        lines.append("(ranked by retrieval only: the LLM ranker was unavailable)")
    return "\n".join(lines) or "No movie matches these constraints."


class RecommenderTools:
    """The chat agent's view of a Recommender: the tools bound to one user, and item lookup."""

    def __init__(self, rec: Recommender):
        self.rec = rec

    def tools(self, user: str) -> list[BaseTool]:
        return make_tools(self.rec, user)

    def find_item(self, text: str) -> Item | None:
        return self.rec.find_item(text)


def make_tools(rec: Recommender, user: str) -> list[BaseTool]:
    def filters(genres: list[str], exclude: list[str], year_min: int | None = None, year_max: int | None = None):
        known = rec.memory.vocabulary if rec.memory and rec.memory.vocabulary else None
        keep = (lambda names: [g for g in names if g in known]) if known else (lambda names: list(names))
        return Filters(genres=keep(genres), exclude_genres=keep(exclude), year_min=year_min, year_max=year_max)

    async def search_catalog(
        text: str,
        genres: list[str] | None = None,
        exclude_genres: list[str] | None = None,
        year_min: int | None = None,
        year_max: int | None = None,
    ) -> str:
        items = await rec.search(text, filters=filters(genres or [], exclude_genres or [], year_min, year_max), n=8)
        return "\n".join(f"- {i.document()} (id {i.id})" for i in items) or "Nothing in the catalog matches."

    async def recommend(
        query: str | None = None,
        genres: list[str] | None = None,
        exclude_genres: list[str] | None = None,
        year_min: int | None = None,
        year_max: int | None = None,
        k: int = 5,
    ) -> str:
        answer = await rec.recommend(
            user, k, query=query or None, filters=filters(genres or [], exclude_genres or [], year_min, year_max)
        )
        return render_recommendations(answer)

    async def show_profile() -> str:
        from driftrec.memory.profiles import profile_document

        profile = await rec.profile(user)
        if not profile.version:
            history = await rec.memory.events.history(user, limit=10) if rec.memory else []
            recent = ", ".join(rec.catalog[e.item].title for e in history if e.item in rec.catalog)
            return "No long-term profile yet." + (f" Recently watched: {recent}." if recent else "")
        return profile_document(profile)

    async def record_feedback(item: str, signal: Literal["like", "dislike"]) -> str:
        found = rec.find_item(item)
        if found is None:
            return f"I could not find a movie called {item!r} in the catalog."
        await rec.feedback(user, found.id, signal)
        return f"Noted: you {signal} {found.title}."

    async def explain_recommendation(item: str) -> str:
        found = rec.find_item(item)
        last = rec.last_recommendations(user)
        if found is None or last is None:
            return f"I have not recommended {item!r} to you in this conversation."
        for r in last.items:
            if r.item.id == found.id:
                sources = ", ".join(f"{p.source} #{p.rank}" for p in r.provenance)
                matched = ", ".join(r.matched_interests) or "no stored interest"
                return f"{r.item.title}: {r.reason} Matches: {matched}. Found by: {sources}."
        return f"{found.title} was not in my last recommendations."

    def tool(fn, args, description: str) -> BaseTool:
        return StructuredTool.from_function(coroutine=fn, name=fn.__name__, description=description, args_schema=args)

    return [
        tool(search_catalog, SearchArgs, "Search the movie catalog by meaning, with optional genre and year filters."),
        tool(recommend, RecommendArgs, "Recommend movies for this user, optionally for a request in words."),
        tool(show_profile, NoArgs, "Show the user's long-term interest profile."),
        tool(record_feedback, FeedbackArgs, "Record that the user likes or dislikes a movie."),
        tool(explain_recommendation, ExplainArgs, "Explain why a movie was recommended."),
    ]
