"""Bad input stops at the edge with an error naming the field: ids and texts that could corrupt memory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from driftrec.memory.drift import ProfileProposal
from driftrec.memory.llm_steps import proposal_schema
from driftrec.models import Interaction, SessionSummary, StatedPreference

NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_id", "s" * 129),  # ids are bounded
        ("session_id", "a\nb"),  # no control characters
        ("session_id", ""),
        ("user", "a/b"),  # a user id is a path segment: every recordable id can be forgotten over HTTP
        ("user", "x" * 257),
        ("user", "bad\x00id"),
        ("user", "\ud800"),  # a lone surrogate is not text
        ("text", "\udfff"),
    ],
)
def test_malformed_ids_and_text_are_refused_naming_the_field(field: str, value: str) -> None:
    event = {"user": "u", "item": "1", "timestamp": NOW} | {field: value}
    with pytest.raises(ValidationError) as caught:
        Interaction.model_validate(event)
    assert caught.value.errors()[0]["loc"][0] == field


def test_bounded_ids_are_accepted() -> None:
    event = Interaction(user="ada lovelace #1", item="1", timestamp=NOW, session_id="s" * 128)
    assert event.session_id == "s" * 128


def test_summaries_and_stated_preferences_are_bounded() -> None:
    with pytest.raises(ValidationError):
        SessionSummary(user="u", session_id="x" * 200)
    with pytest.raises(ValidationError):
        StatedPreference(user="u", name="x" * 81, polarity="like")
    with pytest.raises(ValidationError):
        StatedPreference(user="u", name="Horror", polarity="meh")  # type: ignore[arg-type]


def test_the_free_vocabulary_schema_admits_only_names_the_profile_accepts() -> None:
    schema = proposal_schema(None).model_json_schema()
    name = schema["$defs"]["InterestDraft"]["properties"]["name"]
    assert name["maxLength"] == 40 and name["minLength"] == 1 and "pattern" not in name  # xgrammar: not both
    with pytest.raises(ValidationError):
        proposal_schema(None).model_validate(
            {"interests": [{"name": "", "strength": 3}], "dislikes": [], "summary": ""}
        )
    ProfileProposal(interests=[{"name": "x" * 40, "weight": 0.5}])  # what the schema admits, the model accepts


def test_the_proposal_schema_offers_interests_and_dislikes_their_own_names() -> None:
    schema = proposal_schema(["Animation", "Comedy"], min_interests=1, dislike_vocabulary=["Horror"])
    shown = schema.model_json_schema()
    assert shown["$defs"]["InterestDraft"]["properties"]["name"]["enum"] == ["Animation", "Comedy"]
    assert shown["$defs"]["DislikeDraft"]["properties"]["name"]["const"] == "Horror"  # one name: a const
    assert shown["properties"]["interests"]["minItems"] == 1
    with pytest.raises(ValidationError):  # a dislike named from the interests' list
        schema.model_validate(
            {
                "interests": [{"name": "Comedy", "strength": 3}],
                "dislikes": [{"name": "Comedy", "strength": 2}],
                "summary": "",
            }
        )
    # nothing backed: that list must be empty (and min_interests gives way)
    empty = proposal_schema([], min_interests=1, dislike_vocabulary=[]).model_json_schema()
    assert (
        empty["properties"]["interests"]["maxItems"] == 0 and empty["properties"]["interests"].get("minItems", 0) == 0
    )
    assert empty["properties"]["dislikes"]["maxItems"] == 0
    proposal_schema([], dislike_vocabulary=[]).model_validate({"interests": [], "dislikes": [], "summary": "none"})
