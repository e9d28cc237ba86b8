"""Prompt templates are files; rendering fits the budget by trimming the least important sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftrec.llm.checkpoint import PreparedModel
from driftrec.llm.tokens import TokenCounter
from driftrec.prompts import (
    PromptError,
    PromptTemplate,
    PromptTooLong,
    available_templates,
    load_template,
    render,
)

TEMPLATE = PromptTemplate.model_validate(
    {
        "name": "t",
        "version": 3,
        "system": "You rank movies.",
        "sections": [
            {"name": "profile", "priority": 80, "trim": "truncate", "text": "Profile: {{ profile }}"},
            {"name": "history", "priority": 20, "trim": "drop", "text": "Recent: {{ history | join(', ') }}"},
            {"name": "notes", "priority": 10, "trim": "truncate", "text": "{{ notes }}"},
            {"name": "candidates", "trim": "required", "text": "Candidates: {{ candidates | join(', ') }}"},
        ],
    }
)
VARIABLES = {
    "profile": "likes slow-burn science fiction and 1970s thrillers. " * 20,
    "history": [f"Movie {i} (199{i % 10})" for i in range(60)],
    "notes": "note " * 200,
    "candidates": ["A) Alien", "B) Heat", "C) Fargo"],
}


@pytest.fixture(scope="module")
def counter(prepared: PreparedModel) -> TokenCounter:
    return prepared.token_counter()


def test_packaged_templates_load_with_a_version() -> None:
    assert "item_facets" in available_templates()
    template = load_template("item_facets")
    assert template.id == "item_facets@v2"


def test_prompt_that_fits_is_untouched(counter: TokenCounter) -> None:
    prompt = render(TEMPLATE, VARIABLES, counter=counter, budget=100_000)
    assert prompt.trimmed == []
    assert prompt.id == "t@v3"
    assert prompt.tokens == counter.count_messages(prompt.messages)
    user = prompt.messages[1]["content"]
    assert user.index("Profile:") < user.index("Recent:") < user.index("Candidates:")


def test_lowest_priority_sections_go_first(counter: TokenCounter) -> None:
    full = render(TEMPLATE, VARIABLES, counter=counter, budget=100_000).tokens
    notes = counter.count("note " * 200)
    prompt = render(TEMPLATE, VARIABLES, counter=counter, budget=full - notes // 2)
    assert prompt.trimmed == ["notes"]
    assert prompt.tokens <= full - notes // 2
    assert "Recent:" in prompt.messages[1]["content"]


def test_tight_budget_keeps_required_sections_and_truncates_the_rest(counter: TokenCounter) -> None:
    prompt = render(TEMPLATE, VARIABLES, counter=counter, budget=120)
    assert prompt.tokens <= 120
    assert prompt.trimmed == ["notes", "history", "profile"]
    assert "Candidates: A) Alien, B) Heat, C) Fargo" in prompt.messages[1]["content"]


def test_impossible_budget_is_a_typed_error(counter: TokenCounter) -> None:
    with pytest.raises(PromptTooLong, match="budget is 20"):
        render(TEMPLATE, VARIABLES, counter=counter, budget=20)


def test_missing_variable_and_bad_file_are_prompt_errors(counter: TokenCounter, tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="candidates"):
        render(TEMPLATE, {k: v for k, v in VARIABLES.items() if k != "candidates"}, counter=counter, budget=999)
    (tmp_path / "broken.toml").write_text('name = "broken"\nversion = 0\nsystem = "x"\nsections = []\n')
    with pytest.raises(PromptError, match="version"):
        load_template("broken", tmp_path)
