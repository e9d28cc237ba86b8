"""The model's reading of a chat request counts only where the message grounds it.

Seen with Qwen2.5-Coder-0.5B in native tool mode on "I'm tired of horror, something funny from the 90s
please": it refused Comedy and 15 other genres, asked for none, and added a stray ``type`` argument.
Merged as before ("refusals win"), the request's own Comedy was lost; grounded, it is kept."""

from __future__ import annotations

from pathlib import Path

from driftrec.agent.chat import ChatAgent, ChatOptions, mentions, plan_schema
from driftrec.agent.signals import stated_preferences
from driftrec.data.movielens import GROUPLENS_GENRES
from driftrec.memory.conversation import ConversationStore, StatementStore
from driftrec.memory.db import SqliteDatabase

GENRES = tuple(g for g in GROUPLENS_GENRES if g != "unknown")  # MovieLens-100K's genres


def agent(tmp_path: Path) -> ChatAgent:
    db = SqliteDatabase(tmp_path / "m.db")
    options = ChatOptions(mode="tools", vocabulary=GENRES, latest_year=1998)
    return ChatAgent(None, None, ConversationStore(db), StatementStore(db), options)  # type: ignore[arg-type]


def test_the_models_refusal_of_what_the_message_asks_for_is_dropped(tmp_path: Path) -> None:
    message = "I'm tired of horror, something funny from the 90s please"
    everything_but_animation = [g for g in GENRES if g != "Animation"]
    got = agent(tmp_path)._constraints(message, [], [], everything_but_animation, year_min=1990, year_max=1995)
    assert got["genres"] == ["Comedy"] and got["exclude_genres"] == ["Horror"]
    assert (got["year_min"], got["year_max"]) == (
        1990,
        1999,
    )  # the parser read the decade; the model's 1995 is not in the text


def test_the_model_adds_what_the_message_names_but_the_parser_missed(tmp_path: Path) -> None:
    message = "a documentaries evening, and westerns would do too"
    got = agent(tmp_path)._constraints(message, [], ["Documentary", "Western", "Drama"], [])
    assert set(got["genres"]) == {"Documentary", "Western"}  # Drama is not in the message


def test_mentions_are_whole_words() -> None:
    assert mentions("a war film", "War") and not mentions("an award winner", "War")
    assert mentions("something funny", "Comedy") and mentions("animated please", "Animation")


def test_the_models_count_counts_only_if_the_user_gave_it(tmp_path: Path) -> None:
    chat = agent(tmp_path)
    asked = chat._guard("recommend", {"k": 3, "genres": ["Comedy"]}, "3 comedies please", [])
    assert asked["k"] == 3
    invented = chat._guard("recommend", {"k": 2, "genres": ["Comedy"]}, "some comedies please", [])
    assert "k" not in invented  # the tool's default applies


def test_a_request_for_suggestions_is_answered_with_recommendations_not_a_catalog_search(tmp_path: Path) -> None:
    """Qwen 0.5B planned "search" for "something funny from the eighties, nothing with children" (so the
    user got a catalog lookup, not their recommendations); a plainly named title lookup stays a search."""
    chat = agent(tmp_path)
    schema = plan_schema(GENRES)
    searched = schema.model_validate({"action": "search", "query": "funny eighties", "genres": ["Comedy"]})
    action, args = chat._arguments(searched, "something funny from the eighties, nothing with children", [])
    assert action == "recommend" and args["genres"] == ["Comedy"] and args["exclude_genres"] == ["Children's"]
    assert (args["year_min"], args["year_max"]) == (1980, 1989)
    lookup = schema.model_validate({"action": "search", "query": "shark movie"})
    assert chat._arguments(lookup, "find the movie with the shark", [])[0] == "search"


def test_a_stated_request_gets_recommendations_whichever_tool_the_model_chose(tmp_path: Path) -> None:
    """Qwen 0.5B in native tool mode answered "thrillers released after 1993" and "show me a drama,
    nothing too scary" with a catalog search, so the user got no recommendations: the same rule as plan
    mode now settles both modes' actions. A question with no stated want keeps the model's choice."""
    chat = agent(tmp_path)
    for message in ("thrillers released after 1993", "show me a drama, nothing too scary"):
        stated = stated_preferences("u", message, GENRES)
        assert stated, message  # the message states what the user wants
        for action in ("search", "show_profile", "answer"):
            assert chat._settle(action, message, stated) == "recommend", (message, action)
    assert chat._settle("search", "find the movie with the shark", []) == "search"
    assert chat._settle("answer", "what do you know about me?", []) == "show_profile"
    assert chat._settle("feedback", "I liked it", [], item="", signal="like") == "recommend"  # no item to record
