"""The user's own corrections of their profile, and why they hold.

A profile is scrutable (the user reads every interest with its evidence) and editable: adding or
removing an interest or a dislike is stored as an event (table ``profile_edits``), makes a new
profile version at once, and is upheld by every later update, whatever the LLM proposes, until the
user's own events *after* the edit say otherwise (as stated preferences are evidence, an edit is a
standing instruction):

- an added interest stays (at no less than ``EDIT_WEIGHT``, without decay) until the user disliked
  more items of it than they liked since, at least ``CONTRARY_EVENTS`` of them;
- a removed interest stays out until the user liked at least ``CONTRARY_EVENTS`` items of it since,
  more than they disliked;
- an added dislike stays (and its genre is kept out of recommendations) until liked likewise;
- a removed dislike stays out until disliked likewise.

The latest edit of a name wins. The code is pure: what holds is decided from the edits and the events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from driftrec.memory.db import Database
from driftrec.memory.drift import _key
from driftrec.memory.evidence import gather
from driftrec.models import Interaction, Interest, InterestProfile, Item, ProfileEdit

EDIT_WEIGHT = 0.5  # an interest the user added starts here and never decays below it
CONTRARY_EVENTS = 2  # events after an edit that overturn it (and outnumber the other side)


class EditStore:
    def __init__(self, db: Database):
        self.db = db

    def _add(self, user: str, edits: Sequence[ProfileEdit]) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO profile_edits (user, name, kind, action, ts) VALUES (?, ?, ?, ?, ?)",
                [(user, e.name, e.kind, e.action, e.created_at.timestamp()) for e in edits],
            )

    async def add(self, user: str, edits: Sequence[ProfileEdit]) -> None:
        await asyncio.to_thread(self._add, user, edits)

    def _all(self, user: str) -> list[ProfileEdit]:
        rows = (
            self.db.connection()
            .execute("SELECT name, kind, action, ts FROM profile_edits WHERE user = ? ORDER BY seq", (user,))
            .fetchall()
        )
        return [
            ProfileEdit(name=n, kind=k, action=a, created_at=datetime.fromtimestamp(ts, UTC))  # type: ignore[arg-type]
            for n, k, a, ts in rows
        ]

    def latest_blocking(self, user: str) -> list[ProfileEdit]:
        """The standing edit per name (the latest one), oldest first."""
        by_name: dict[str, ProfileEdit] = {}
        for edit in self._all(user):
            by_name.pop(_key(edit.name), None)
            by_name[_key(edit.name)] = edit
        return list(by_name.values())

    async def latest(self, user: str) -> list[ProfileEdit]:
        return await asyncio.to_thread(self.latest_blocking, user)


def overturned(edit: ProfileEdit, events: Iterable[Interaction], catalog: Mapping[str, Item]) -> bool:
    """Whether the user's events after the edit contradict it (module doc)."""
    after = [e for e in events if e.timestamp > edit.created_at]
    evidence = gather(after, catalog).get(_key(edit.name))
    if evidence is None:
        return False
    pos, neg = len(evidence.positive), len(evidence.negative)
    wants_it = (edit.kind == "interest") == (edit.action == "add")  # add interest / remove dislike
    return neg >= CONTRARY_EVENTS and neg > pos if wants_it else pos >= CONTRARY_EVENTS and pos > neg


def uphold(
    profile: InterestProfile,
    edits: Sequence[ProfileEdit],
    events: Sequence[Interaction],
    catalog: Mapping[str, Item],
    now: datetime,
) -> InterestProfile:
    """``profile`` with every standing, not overturned edit applied; ``edits`` lists those that held."""
    interests = {_key(i.name): i for i in profile.interests}
    dislikes = {_key(i.name): i for i in profile.dislikes}
    held: list[str] = []
    for edit in edits:
        if overturned(edit, events, catalog):
            continue
        key = _key(edit.name)
        target, other = (interests, dislikes) if edit.kind == "interest" else (dislikes, interests)
        if edit.action == "remove":
            target.pop(key, None)
        else:
            other.pop(key, None)  # liking what one disliked ends the dislike, and vice versa
            prior = target.get(key)
            weight = max(prior.weight if prior else 0.0, EDIT_WEIGHT)
            target[key] = (
                prior.model_copy(update={"weight": weight, "source": "edit"})
                if prior
                else Interest(name=edit.name, weight=weight, source="edit", first_seen=now, last_seen=now)
            )
        held.append(edit.words())
    ordered = sorted(interests.values(), key=lambda i: -i.weight)
    return profile.model_copy(update={"interests": ordered, "dislikes": list(dislikes.values()), "edits": held[-50:]})


def standing(
    edits: Sequence[ProfileEdit], events: Sequence[Interaction], catalog: Mapping[str, Item]
) -> tuple[list[str], list[str]]:
    """Genres the user's standing edits keep out (added dislikes) and push back (removed interests)."""
    live = [e for e in edits if not overturned(e, events, catalog)]
    excluded = [e.name for e in live if e.kind == "dislike" and e.action == "add"]
    demoted = [e.name for e in live if e.kind == "interest" and e.action == "remove"]
    return excluded, demoted
