"""Where a native tool call is routed, with the model's call given (the real model's calls are measured by
`driftrec eval requests --llm` and tests/integration/test_model_families.py; this pins the routing only).

Seen with Qwen2.5-Coder-0.5B: a catalog search for "thrillers released after 1993" and the profile, with
an invented argument, for "show me a thriller, nothing too scary". Both now run the user's recommendations
with the request's constraints, and nothing the recommend tool does not take reaches it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

from driftrec.agent.chat import ChatAgent, ChatOptions
from driftrec.agent.signals import stated_preferences
from driftrec.agent.tools import NoArgs, RecommendArgs, SearchArgs
from driftrec.data.movielens import GROUPLENS_GENRES
from driftrec.memory.conversation import ConversationStore, StatementStore
from driftrec.memory.db import SqliteDatabase

GENRES = tuple(g for g in GROUPLENS_GENRES if g != "unknown")


class Tools:
    """The three tools, recording what each ran with."""

    def __init__(self) -> None:
        self.ran: dict[str, dict[str, Any]] = {}

        async def recommend(**kw: Any) -> str:
            self.ran["recommend"] = kw
            return "1. Heat (1995)"

        async def search_catalog(**kw: Any) -> str:
            self.ran["search_catalog"] = kw
            return "- Heat (1995)"

        async def show_profile() -> str:
            self.ran["show_profile"] = {}
            return "No long-term profile yet."

        self.all = [
            StructuredTool.from_function(
                coroutine=recommend, name="recommend", description="r", args_schema=RecommendArgs
            ),
            StructuredTool.from_function(
                coroutine=search_catalog, name="search_catalog", description="s", args_schema=SearchArgs
            ),
            StructuredTool.from_function(
                coroutine=show_profile, name="show_profile", description="p", args_schema=NoArgs
            ),
        ]

    def tools(self, user: str) -> list[BaseTool]:
        return self.all

    def find_item(self, text: str) -> None:
        return None


class Tokens:
    def count(self, text: str) -> int:
        return len(text) // 4

    def count_messages(self, messages: list) -> int:
        return sum(len(str(m)) for m in messages) // 4

    def truncate(self, text: str, n: int) -> str:
        return text


async def run_call(tmp_path: Path, name: str, arguments: dict[str, Any], message: str) -> tuple[Tools, ChatAgent]:
    async def tool_call(*args: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(name=name, arguments=arguments)

    async def no_lead(*args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        return
        yield

    facade = Tools()
    llm = SimpleNamespace(client=SimpleNamespace(tool_call=tool_call), tokens=Tokens(), context_window=8192)
    db = SqliteDatabase(tmp_path / "m.db")
    options = ChatOptions(mode="tools", vocabulary=GENRES, latest_year=1998)
    agent = ChatAgent(llm, facade, ConversationStore(db), StatementStore(db), options)  # type: ignore[arg-type]
    agent._lead = no_lead  # type: ignore[method-assign]
    stated = stated_preferences("u", message, GENRES)
    async for _ in agent._tools_mode("u", message, "", [], stated):
        pass
    return facade, agent


async def test_a_search_for_a_stated_request_runs_recommendations_with_its_constraints(tmp_path: Path) -> None:
    message = "thrillers released after 1993"
    facade, agent = await run_call(tmp_path, "search_catalog", {"text": message, "genres": ["Thriller"]}, message)
    assert list(facade.ran) == ["recommend"]
    args = facade.ran["recommend"]
    assert args["genres"] == ["Thriller"] and args["year_min"] == 1994 and args["query"] == message
    assert "text" not in args
    turn = agent.last_turn["u"]
    assert (turn.mode, turn.action, turn.degraded) == ("tools", "recommend", None)


async def test_the_profile_for_a_stated_request_runs_recommendations(tmp_path: Path) -> None:
    message = "show me a thriller, nothing too scary"
    facade, _ = await run_call(tmp_path, "show_profile", {"profile": {"Thriller": 1}}, message)
    assert list(facade.ran) == ["recommend"]
    assert facade.ran["recommend"]["genres"] == ["Thriller"] and facade.ran["recommend"]["exclude_genres"] == ["Horror"]
    assert "profile" not in facade.ran["recommend"]


async def test_a_title_lookup_stays_a_search(tmp_path: Path) -> None:
    message = "find the movie with the shark"
    facade, _ = await run_call(tmp_path, "search_catalog", {"text": "shark"}, message)
    assert list(facade.ran) == ["search_catalog"] and facade.ran["search_catalog"]["text"] == "shark"
