"""Turn whatever the LLM said into exactly k valid items, and count what had to be repaired.

The error indicators are RecLM-eval's: a *candidate error* names something outside the candidate set,
a *duplicate* names an item twice, a *history error* names an item the user already consumed. On vLLM
the schema makes the first two structurally rare; other servers (or a model cut off by max_tokens)
can produce all three, and a run reports how often each happened and how often the fallback fired.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from pydantic import BaseModel


class RankErrors(BaseModel):
    """Per-call counts; ``+`` aggregates them over a run."""

    requests: int = 0  # ranking requests (one recommend call)
    replies: int = 0  # LLM rankings parsed (one per shuffle round)
    candidate_errors: int = 0
    duplicate_errors: int = 0
    history_errors: int = 0
    filled: int = 0  # items appended in retrieval order because the LLM left them out
    invalid_outputs: int = 0  # replies that were not valid JSON / did not validate (salvaged or not)
    fallbacks: int = 0  # calls answered with the retrieval order (degraded)

    def __add__(self, other: RankErrors) -> RankErrors:
        return RankErrors(**{name: getattr(self, name) + getattr(other, name) for name in RankErrors.model_fields})

    def rates(self) -> dict[str, float]:
        """Error indicators per LLM reply, fallbacks per request."""
        per_reply = ("candidate_errors", "duplicate_errors", "history_errors", "filled", "invalid_outputs")
        rates = {f"{name}_rate": getattr(self, name) / max(self.replies, 1) for name in per_reply}
        rates["fallback_rate"] = self.fallbacks / max(self.requests, 1)
        return rates


_ITEM_FIELD = re.compile(r'"item"\s*:\s*"((?:[^"\\]|\\.)*)"')
_BARE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def salvage(raw: str | None) -> list[str] | None:
    """The item references in a reply that did not validate (bad labels, truncated JSON), or None.

    A complete JSON object is read as {"ranking": [...]} with strings or {"item": ...} entries; a
    truncated one is scanned for its ``"item": "..."`` fields (or, for a bare list, its strings).
    """
    if not raw or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        found = _ITEM_FIELD.findall(raw)
        if not found and '"ranking"' in raw:
            found = [s for s in _BARE.findall(raw.split('"ranking"', 1)[1]) if s]
        return found or None
    entries = data.get("ranking") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return None
    out = []
    for entry in entries:
        if isinstance(entry, dict):
            entry = entry.get("item")
        if isinstance(entry, str | int):
            out.append(str(entry))
    return out or None


def repair(
    proposed: Sequence[str],
    labels: Mapping[str, str],
    retrieval_order: Sequence[str],
    k: int,
    *,
    seen: Mapping[str, str] | None = None,
) -> tuple[list[str], RankErrors]:
    """Exactly ``min(k, len(retrieval_order))`` items: the valid proposals in order, then retrieval order.

    ``labels`` maps each shown label to its item id; ``retrieval_order`` is the eligible candidates (no
    seen item in it); ``seen`` maps ways of naming a consumed item (its id, its title, lowercased) to
    the id, so a model that names one is caught as a history error rather than a candidate error.
    """
    errors = RankErrors(replies=1)
    allowed = set(retrieval_order)
    seen = seen or {}
    out: list[str] = []
    for ref in proposed:
        key = ref.strip()
        item = labels.get(key) or labels.get(key.upper())
        if item is None:
            if key in seen or key.lower() in seen:
                errors.history_errors += 1
            else:
                errors.candidate_errors += 1
            continue
        if item not in allowed:
            errors.history_errors += 1
            continue
        if item in out:
            errors.duplicate_errors += 1
            continue
        out.append(item)
    target = min(k, len(retrieval_order))
    out = out[:target]
    for item in retrieval_order:
        if len(out) >= target:
            break
        if item not in out:
            out.append(item)
            errors.filled += 1
    return out, errors
