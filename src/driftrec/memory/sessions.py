"""Sessions: runs of a user's interactions with no gap longer than the timeout (or explicit ids).

The open session (the last one, if its last event is within the timeout of ``now``) is the user's
short-term context; closed sessions are what the LLM summarizes into the long-term profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from driftrec.models import Interaction, Session


def auto_session_id(started_at: datetime) -> str:
    """The id of a session the client did not name: its start time (unique per user, which is the key)."""
    return f"auto:{int(started_at.timestamp())}"


def sessionize(events: Sequence[Interaction], gap: timedelta, *, now: datetime | None = None) -> list[Session]:
    """Split one user's time-ordered events into sessions.

    A new session starts when the gap since the previous event exceeds ``gap``, or when an event
    carries a different explicit ``session_id``. Every session but the last is closed; the last is
    closed too when ``now`` is more than ``gap`` after its last event.
    """
    sessions: list[Session] = []
    for event in events:
        current = sessions[-1] if sessions else None
        explicit = event.session_id
        starts_new = (
            current is None
            or event.timestamp - current.ended_at > gap
            or (explicit is not None and explicit != current.session_id)
            or (explicit is None and current.interactions[-1].session_id is not None)
        )
        if starts_new:
            if current is not None:
                current.closed = True
            sid = explicit or auto_session_id(event.timestamp)
            sessions.append(
                Session(
                    user=event.user,
                    session_id=sid,
                    started_at=event.timestamp,
                    ended_at=event.timestamp,
                    interactions=[event],
                )
            )
        else:
            assert current is not None
            current.interactions.append(event)
            current.ended_at = event.timestamp
    if sessions and now is not None and now - sessions[-1].ended_at > gap:
        sessions[-1].closed = True
    return sessions


def open_session(events: Sequence[Interaction], gap: timedelta, now: datetime) -> Session | None:
    """The session still in progress at ``now``, if any. Only the tail since the last gap longer than
    ``gap`` is split (a gap always starts a session, so what came before cannot change the last one)."""
    if not events or now - events[-1].timestamp > gap:
        return None
    start = len(events) - 1
    while start > 0 and events[start].timestamp - events[start - 1].timestamp <= gap:
        start -= 1
    sessions = sessionize(events[start:], gap, now=now)
    return sessions[-1] if sessions and not sessions[-1].closed else None
