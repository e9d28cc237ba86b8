"""How long a reply a JSON schema allows: what a structured call's ``max_tokens`` must cover.

A constrained decoder keeps a reply inside the schema but not inside ``max_tokens``: a small model can fill
every bound the schema sets (SmolLM2-135M on one CPU kind wrote twelve free-text names of the full 40
characters, mostly digits and punctuation at one token each, and the reply was cut inside its last field, so
the profile update failed). A token is at least one character, so the longest reply of unescaped ASCII the
schema allows bounds the tokens of every such reply; a step that asks for at least that many is never cut
short by its own budget (a reply full of escapes or non-ASCII text still can be, and fails as before).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

NUMBER_CHARS = 24  # a JSON number without an enum: a float's longest repr


def reply_chars(schema: type[BaseModel]) -> int | None:
    """The longest compact JSON text (no whitespace, ASCII, no escapes) that validates against ``schema``;
    None when the schema leaves something unbounded (a string without maxLength, an array without maxItems)."""
    tree = schema.model_json_schema()
    return _chars(tree, tree.get("$defs", {}))


def reply_tokens(schema: type[BaseModel], at_least: int, *, at_most: int) -> int:
    """``max_tokens`` for a reply to ``schema``: ``at_least``, raised to cover its longest unescaped ASCII reply
    (``reply_chars``) but not above ``at_most`` (what the context window can give the reply); never lowered."""
    longest = reply_chars(schema)
    return max(at_least, min(longest or at_least, at_most))


def reply_room(schema: type[BaseModel], at_least: int, *, context_window: int, prompt_tokens: int) -> int:
    """``max_tokens`` for a reply to ``schema`` after a prompt of ``prompt_tokens`` was rendered within
    ``context_window - at_least``: the prompt keeps its claim, and the reply grows into what the window leaves,
    up to its longest unescaped ASCII reply (for a step whose reply is worth more than its prompt's last
    lines, reserve with ``reply_tokens`` before rendering instead)."""
    return reply_tokens(schema, at_least, at_most=context_window - prompt_tokens)


def _chars(node: dict[str, Any], defs: dict[str, Any]) -> int | None:
    if "$ref" in node:
        return _chars(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        return max(len(json.dumps(v)) for v in values)
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [_chars(option, defs) for option in node[key]]
            return None if None in options else max(o for o in options if o is not None)
    kind = node.get("type")
    if kind == "object":
        fields = node.get("properties", {})
        parts = [_chars(value, defs) for value in fields.values()]
        if None in parts or node.get("additionalProperties") not in (None, False):
            return None
        keys = sum(len(json.dumps(name)) + 1 for name in fields)  # "name":
        return 2 + keys + sum(p for p in parts if p is not None) + max(len(fields) - 1, 0)
    if kind == "array":
        item = _chars(node.get("items", {}), defs) if "items" in node else None
        most = node.get("maxItems")
        if item is None or most is None:
            return None
        return 2 + most * item + max(most - 1, 0)
    if kind == "string":
        return None if "maxLength" not in node else 2 + int(node["maxLength"])
    if kind in ("integer", "number"):
        return NUMBER_CHARS
    if kind == "boolean":
        return 5
    if kind == "null":
        return 4
    return None
