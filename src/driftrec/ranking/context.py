"""What the ranker knows about one request, and how it is shown to the LLM.

The caller (the Recommender, or the evaluation harness) gathers the user's profile, recent session
summaries, recent items and the retrieved candidates into a ``RankContext``; this module turns it into
template variables with short stable labels (A, B, C, ...), one token each for the verbalizer.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from driftrec.models import Candidate, Interaction, InterestProfile, Item, SessionSummary, item_ids

LABELS: tuple[str, ...] = tuple(string.ascii_uppercase)  # 26 one-token labels


@dataclass(frozen=True)
class RecentItem:
    item: Item
    signal: str = ""  # "rated 4/5", "liked", ...


@dataclass
class RankContext:
    """One ranking request: the candidates in retrieval order, best first, and the user's context."""

    user: str
    candidates: Sequence[Candidate]
    k: int
    profile: InterestProfile | None = None
    profile_text: str = ""
    sessions: Sequence[str] = ()  # recent session summaries as text, oldest first
    themes: Sequence[str] = ()  # themes of recent sessions (for matched interests)
    recent: Sequence[RecentItem] = ()  # the latest items, oldest first
    seen: frozenset[str] = field(default_factory=frozenset)  # already consumed: never recommended
    query: str | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")

    def eligible(self) -> list[Candidate]:
        """Candidates that may be recommended: unseen, first occurrence only, retrieval order kept."""
        out: dict[str, Candidate] = {}
        for candidate in self.candidates:
            if candidate.item.id not in self.seen and candidate.item.id not in out:
                out[candidate.item.id] = candidate
        return list(out.values())


def build_context(
    user: str,
    candidates: Sequence[Candidate],
    k: int,
    *,
    history: Sequence[Interaction],
    catalog: Mapping[str, Item],
    profile: InterestProfile | None = None,
    profile_text: str = "",
    summaries: Sequence[SessionSummary] = (),
    summary_texts: Sequence[str] = (),
    recent_items: int = 10,
    query: str | None = None,
    exclude: Iterable[str] = (),
) -> RankContext:
    """A RankContext from what memory knows: the history (oldest first) gives the recent items and
    the seen set; summaries give the session themes."""
    items = item_ids(history)
    known: list[int] = []  # the latest ``recent_items`` events whose items are in the catalog, read from the end
    for i in range(len(items) - 1, -1, -1):
        if len(known) >= recent_items:
            break
        if items[i] in catalog:
            known.append(i)
    recent = [RecentItem(catalog[items[i]], history[i].signal()) for i in reversed(known)]  # only these are built
    themes = list(dict.fromkeys(t for s in summaries for t in s.themes))
    return RankContext(
        user=user,
        candidates=candidates,
        k=k,
        profile=profile,
        profile_text=profile_text,
        sessions=list(summary_texts),
        themes=themes,
        recent=recent if recent_items else [],
        seen=frozenset(items) | frozenset(exclude),
        query=query,
    )


def candidate_line(item: Item) -> str:
    return item.document()


def prompt_variables(
    context: RankContext, shown: Sequence[Candidate], labels: Sequence[str], **extra: object
) -> dict[str, object]:
    """Template variables shared by the rank prompts (stable user context first, candidates last)."""
    return {
        "profile_text": context.profile_text,
        "sessions": list(context.sessions),
        "recent": [
            {"title": r.item.title, "genres": ", ".join(r.item.genres), "signal": r.signal} for r in context.recent
        ],
        "query": context.query or "",
        "candidates": [{"label": lab, "text": candidate_line(c.item)} for lab, c in zip(labels, shown, strict=True)],
        **extra,
    }
