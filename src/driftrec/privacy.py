"""Pseudonyms for user ids, and the user an LLM call is made for.

User ids never leave the memory database in clear: Chroma ids and metadata, the per-user prompt log
and the response cache carry a keyed pseudonym instead (HMAC-SHA256 with a key kept in the memory
database). Stores that keep freed bytes around (Chroma's own SQLite queue, a log shipped elsewhere)
then hold nothing that names the user, and forgetting the user removes the key's only link to them.

``acting_for`` marks the LLM calls made on a user's behalf (summaries, profile updates, rankings,
chat) so the LLM client can file their log records and cache rows under that user's pseudonym, and
delete them when the user is forgotten. ``llm/`` reads it; it never sees the user id itself.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator
from contextvars import ContextVar

# The pseudonym of the user the current task works for (None: nobody in particular).
SUBJECT: ContextVar[str | None] = ContextVar("driftrec_subject", default=None)


def pseudonym(user: str, key: bytes) -> str:
    """A stable, keyed, unguessable stand-in for ``user`` (24 hex characters)."""
    return hmac.digest(key, user.encode("utf-8", "surrogatepass"), "sha256").hex()[:24]  # one-shot: half hmac.new's


def subject() -> str:
    """The pseudonym of the user the current task works for, for log lines ("-" for nobody in particular):
    a server log must not name a user it cannot forget."""
    return SUBJECT.get() or "-"


@contextlib.contextmanager
def acting_for(tag: str | None) -> Iterator[None]:
    """LLM calls inside this block are made for the user with pseudonym ``tag``."""
    token = SUBJECT.set(tag)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # an async generator closed from another task: context gone
            SUBJECT.reset(token)
