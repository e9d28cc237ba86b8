"""Reading past a reasoning block (``<think>...</think>``) that some chat templates open."""

from __future__ import annotations

from driftrec.llm.client import ReasoningFilter, strip_reasoning


def test_the_answer_is_what_follows_the_block() -> None:
    assert strip_reasoning('<think>they like noir</think>\n{"label": "A"}') == '{"label": "A"}'
    assert strip_reasoning('  <think>x</think>{"a": 1}') == '{"a": 1}'


def test_a_reply_without_a_block_is_left_alone() -> None:
    assert strip_reasoning('{"label": "A"}') == '{"label": "A"}'
    assert strip_reasoning("I think <think> is a tag") == "I think <think> is a tag"


def test_an_unclosed_block_leaves_no_answer() -> None:
    assert strip_reasoning("<think>still thinking when max_tokens ran out") == ""


def stream(pieces: list[str]) -> str:
    reader = ReasoningFilter()
    return "".join(reader.feed(p) for p in pieces)


def test_a_stream_holds_back_the_block_however_it_is_split() -> None:
    text = "<think>the user dislikes horror</think>Try Groundhog Day."
    for size in (1, 2, 3, 7, len(text)):
        assert stream([text[i : i + size] for i in range(0, len(text), size)]) == "Try Groundhog Day."


def test_a_stream_without_a_block_passes_through_at_once() -> None:
    reader = ReasoningFilter()
    assert reader.feed("<") == ""  # might still be "<think>"
    assert reader.feed("b>Bold") == "<b>Bold"
    assert reader.feed(" move") == " move"
    assert stream(["Fargo", " (1996)"]) == "Fargo (1996)"
