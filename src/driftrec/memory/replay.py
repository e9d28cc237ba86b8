"""Replay a user's history session by session, as production would have seen it, to build the profile
timeline (and, in evaluation, the profile a user has at any point in time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from driftrec.memory.service import Memory, RefreshResult
from driftrec.memory.sessions import sessionize
from driftrec.models import Interaction


async def replay(
    memory: Memory,
    events: Sequence[Interaction],
    *,
    max_sessions: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[RefreshResult]:
    """Observe each session's events, then refresh the profile just after the session closed."""
    sessions = sessionize(sorted(events, key=lambda e: e.timestamp), memory.gap)
    if max_sessions is not None:
        sessions = sessions[-max_sessions:]
    results = []
    for n, session in enumerate(sessions, start=1):
        await memory.observe(session.interactions)
        results.append(await memory.refresh_profile(session.user, now=session.ended_at + memory.gap * 1.01))
        if progress:
            progress(n, len(sessions))
    return results
