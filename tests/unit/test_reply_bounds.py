"""A structured step asks for enough tokens to finish any reply its schema allows: the longest compact ASCII
reply, computed from the schema, is exactly the reply with every bound filled. A step whose prompt comes first
gives its reply what the window leaves, up to that bound."""

from __future__ import annotations

from pydantic import BaseModel, Field

from driftrec.agent.chat import plan_schema
from driftrec.llm.bounds import reply_chars, reply_room, reply_tokens
from driftrec.memory.llm_steps import FREE_NAME_CHARS, proposal_schema, summary_schema
from driftrec.ranking.listwise import listwise_schema


def test_the_longest_free_text_profile_reply_is_every_bound_filled() -> None:
    schema = proposal_schema(None, min_interests=1)
    name = "9" * FREE_NAME_CHARS  # digits: one token each for SmolLM2's tokenizer
    longest = schema.model_validate(
        {
            "interests": [{"name": name, "strength": 5}] * 8,
            "dislikes": [{"name": name, "strength": 5}] * 4,
            "summary": "x" * 160,
        }
    )
    assert reply_chars(schema) == len(longest.model_dump_json())  # compact JSON, as the grammar emits it
    assert reply_chars(schema) > 384  # the fixed budget this replaced could not hold it


def test_names_from_a_vocabulary_are_bounded_by_the_longest_name() -> None:
    genres = ["Drama", "Documentary", "War"]
    schema = summary_schema(["1", "2", "10"], genres)
    longest = schema.model_validate(
        {"themes": ["Documentary"] * 4, "liked": ["10"] * 10, "disliked": ["10"] * 10, "intent": "y" * 120}
    )
    assert reply_chars(schema) == len(longest.model_dump_json())


def test_an_unbounded_schema_has_no_bound_and_the_budget_stays_within_the_window() -> None:
    class Free(BaseModel):
        text: str  # no maxLength

    class Short(BaseModel):
        word: str = Field(max_length=3)

    assert reply_chars(Free) is None
    assert reply_tokens(Free, 256, at_most=4096) == 256  # nothing to raise it to
    assert reply_chars(Short) == len('{"word":"abc"}')
    assert reply_tokens(Short, 256, at_most=4096) == 256  # already enough
    assert reply_tokens(proposal_schema(None), 384, at_most=4096) == reply_chars(proposal_schema(None))
    assert reply_tokens(proposal_schema(None), 384, at_most=500) == 500  # the prompt keeps its share
    assert reply_tokens(proposal_schema(None), 384, at_most=256) == 384  # a small window: as asked, never less


def test_a_ranking_or_plan_reply_grows_into_the_window_its_prompt_leaves() -> None:
    """The listwise ranking, the chat plan and the conversation fold render their prompt first (within the
    window less their usual reply), and their reply then takes what the window leaves, up to its bound."""
    labels = [chr(ord("A") + n) for n in range(20)]
    with_reasons = listwise_schema(labels, 10, reasons=True)  # ten entries, a reason of up to 120 characters each
    longest = reply_chars(with_reasons)
    assert longest is not None and longest > 256  # the default budget could cut such a reply
    assert reply_room(with_reasons, 256, context_window=8192, prompt_tokens=1500) == longest
    assert reply_room(with_reasons, 256, context_window=2048, prompt_tokens=1500) == 548  # what is left
    assert reply_room(with_reasons, 256, context_window=2048, prompt_tokens=1792) == 256  # never below the ask
    assert reply_room(listwise_schema(labels, 10, reasons=False), 256, context_window=8192, prompt_tokens=900) == 256
    plan = plan_schema(["Action", "Comedy", "Film-Noir"])
    assert reply_room(plan, 160, context_window=2048, prompt_tokens=1000) == reply_chars(plan)
    assert reply_room(plan_schema([]), 160, context_window=2048, prompt_tokens=1000) == 160  # free genres: unbounded
