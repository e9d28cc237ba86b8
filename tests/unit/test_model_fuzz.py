"""Hypothesis on the pydantic models the API reads: whatever JSON arrives, a model either refuses it with
a ValidationError or holds a value that is valid Unicode, finite, within its bounds and that survives a
round trip through JSON unchanged. Nothing else (no TypeError, no OverflowError, no half-valid object)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from driftrec.models import Filters, Interaction, ProfileEdits
from driftrec.server.app import ChatIn, EventsIn, FeedbackIn, RecommendIn

MODELS: list[type[BaseModel]] = [Interaction, Filters, ProfileEdits, RecommendIn, FeedbackIn, ChatIn, EventsIn]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["like", "Comedy", "interest", "add", "2024-01-01T00:00:00Z", "50", "1.5", "true"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


# Values that could pass, per field, so that half the draws go past the first refusal.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "user": st.text(min_size=1, max_size=20),
    "item": st.sampled_from(["1", "50", "x" * 300]) | st.text(min_size=1, max_size=20),
    "timestamp": st.integers(min_value=-10, max_value=2_000_000_000) | st.sampled_from(["2024-01-01T00:00:00Z"]),
    "at": st.none() | st.sampled_from(["2024-01-01T00:00:00Z", "1970-01-01T00:00:00Z"]),
    "rating": st.none() | st.floats(min_value=-1, max_value=11) | st.integers(-1, 11),
    "k": st.integers(min_value=-1, max_value=101) | st.floats(min_value=0, max_value=101),
    "name": st.sampled_from(["Comedy", "horror", "Sci-Fi", "nope"]) | st.text(max_size=20),
    "kind": st.sampled_from(["interest", "dislike"]),
    "action": st.sampled_from(["add", "remove", "view", "like", "rate"]),
    "signal": st.none() | st.sampled_from(["like", "dislike", "skip", "meh"]),
    "message": st.text(min_size=0, max_size=50),
    "query": st.none() | st.text(max_size=50),
    "text": st.none() | st.text(max_size=50),
    "explain": st.booleans() | st.integers(0, 1),
    "exclude": st.lists(st.text(min_size=1, max_size=5), max_size=3),
    "genres": st.lists(st.sampled_from(["Comedy", "Drama"]) | st.text(max_size=5), max_size=3),
    "exclude_genres": st.lists(st.sampled_from(["Horror"]) | st.text(max_size=5), max_size=3),
    "year_min": st.none() | st.integers(-5, 3005) | st.booleans(),
    "year_max": st.none() | st.integers(-5, 3005) | st.floats(0, 3000),
    "session_id": st.none() | st.text(max_size=10),
}


@st.composite
def bodies(draw: st.DrawFn, model: type[BaseModel]) -> dict[str, Any]:
    """Objects with the model's own fields (required ones mostly present, so validation goes deep) and
    sometimes a stray one; each value plausible three times in four, arbitrary JSON otherwise."""
    fields = model.model_fields
    keys = [k for k, f in fields.items() if f.is_required() and draw(st.integers(0, 9))]
    keys += draw(st.lists(st.sampled_from([k for k, f in fields.items() if not f.is_required()] or ["_"]), unique=True))
    if not draw(st.integers(0, 9)):
        keys.append(draw(st.sampled_from(["user", "rating", "k", "extra", "name"])))
    body = {}
    for key in dict.fromkeys(keys):
        plausible = PLAUSIBLE.get(key, json_values)
        body[key] = draw(st.one_of(plausible, plausible, plausible, json_values))
    if model is EventsIn and "events" in body and draw(st.integers(0, 3)):
        body["events"] = draw(st.lists(bodies(Interaction), min_size=1, max_size=3))
    if model is ProfileEdits and "edits" in body and draw(st.integers(0, 3)):
        body["edits"] = draw(st.lists(bodies_of_edits(), min_size=1, max_size=3))
    if model is RecommendIn and "filters" in body and draw(st.integers(0, 3)):
        body["filters"] = draw(bodies(Filters))
    return body


def bodies_of_edits() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"name": PLAUSIBLE["name"]}, optional={"kind": PLAUSIBLE["kind"], "action": PLAUSIBLE["action"]}
    )


def check_sane(value: Any) -> None:
    if isinstance(value, str):
        value.encode("utf-8")  # no lone surrogate got in
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for v in value.values():
            check_sane(v)
    elif isinstance(value, list | tuple):
        for v in value:
            check_sane(v)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_json_is_refused_cleanly_or_valid_through_and_through(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(MODELS))
    body = data.draw(bodies(model))
    raw = json.dumps(body)
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        assert exc.errors(), "a refusal names at least one field"
        return
    dumped = parsed.model_dump(mode="json")
    check_sane(dumped)
    assert model.model_validate_json(parsed.model_dump_json()) == parsed


@settings(max_examples=150, deadline=None)
@given(flag=st.booleans(), text=st.text(alphabet="0123456789", min_size=1, max_size=3))
def test_numbers_are_json_numbers_not_booleans_or_strings(flag: bool, text: str) -> None:
    for body in ({"k": flag}, {"k": text}, {"filters": {"year_min": flag}}):
        try:
            RecommendIn.model_validate_json(json.dumps(body))
        except ValidationError as exc:
            assert "JSON number" in str(exc)
        else:
            raise AssertionError(f"accepted {body}")
    for value in (flag, text):
        body = {"user": "u", "item": "1", "rating": value, "timestamp": 0}
        try:
            Interaction.model_validate_json(json.dumps(body))
        except ValidationError:
            continue
        raise AssertionError(f"accepted rating {value!r}")
