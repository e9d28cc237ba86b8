"""API keys: admin keys and keys scoped to one user, hashed at rest, created and revoked from the CLI.

A key is shown once, when it is made (``drk_<id>_<secret>``); the store keeps only its SHA-256 (the
secret is 256 random bits, so a plain hash is enough: there is nothing to brute-force). A key scoped to
a user is one of that user's rows: forgetting the user deletes it. Revoking keeps the row (who had
access, and until when) but the key stops working at once, in every process that reads this store.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel

from driftrec.memory.db import Database, open_database

if TYPE_CHECKING:
    from driftrec.config import Settings

TOKEN = re.compile(r"^drk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


class ApiKey(BaseModel):
    """What the store knows of a key (never the key itself)."""

    id: str
    user: str | None  # None: an admin key (every user, every route)
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def admin(self) -> bool:
        return self.user is None


class UnknownKey(LookupError):
    """No key has this id."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _key(row: tuple) -> ApiKey:
    key_id, user, name, created, revoked = row
    return ApiKey(
        id=key_id,
        user=user,
        name=name,
        created_at=datetime.fromtimestamp(created, UTC),
        revoked_at=datetime.fromtimestamp(revoked, UTC) if revoked is not None else None,
    )


class KeyStore:
    COLUMNS = "id, user, name, created, revoked"

    def __init__(self, db: Database):
        self.db = db
        self._required: tuple[bool, float] | None = None  # the last answer to required(), and when (monotonic)

    @classmethod
    def open(cls, settings: Settings) -> KeyStore:
        """The keys of the configured memory store (for the CLI: no Chroma, no LLM)."""
        return cls(open_database(settings))

    def create(self, user: str | None, name: str = "") -> tuple[str, ApiKey]:
        """A new key for ``user`` (None: admin). Returns the token, shown to the caller once, and its record."""
        key_id = secrets.token_hex(6)
        token = f"drk_{key_id}_{secrets.token_urlsafe(32)}"
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, hash, user, name, created) VALUES (?, ?, ?, ?, ?)",
                (key_id, _digest(token), user, name, time.time()),
            )
        self._required = None  # this process made a key: it is required from now on, not after trust_s
        return token, self.get(key_id)

    def get(self, key_id: str) -> ApiKey:
        row = self.db.connection().execute(f"SELECT {self.COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise UnknownKey(f"no API key has the id {key_id!r}")
        return _key(row)

    def revoke(self, key_id: str) -> ApiKey:
        with self.db.transaction() as conn:
            found = conn.execute(
                "UPDATE api_keys SET revoked = COALESCE(revoked, ?) WHERE id = ?", (time.time(), key_id)
            ).rowcount
        if not found:
            raise UnknownKey(f"no API key has the id {key_id!r}")
        self._required = None
        return self.get(key_id)

    def all(self) -> list[ApiKey]:
        rows = self.db.connection().execute(f"SELECT {self.COLUMNS} FROM api_keys ORDER BY created").fetchall()
        return [_key(r) for r in rows]

    def check(self, token: str) -> ApiKey | None:
        """The live key this token is, or None (unknown, malformed or revoked)."""
        if not TOKEN.match(token):
            return None
        row = (
            self.db.connection()
            .execute(f"SELECT {self.COLUMNS} FROM api_keys WHERE hash = ? AND revoked IS NULL", (_digest(token),))
            .fetchone()
        )
        return _key(row) if row else None

    def required(self) -> bool:
        """Whether any live key exists (then every API route needs one)."""
        return (
            self.db.connection().execute("SELECT 1 FROM api_keys WHERE revoked IS NULL LIMIT 1").fetchone() is not None
        )

    async def acheck(self, token: str | None, *, trust_s: float = 0.0) -> tuple[ApiKey | None, bool]:
        """(the key, whether keys are required), in one worker-thread hop. Without a token, an answer to
        "are keys required?" read less than ``trust_s`` seconds ago is used without asking the store (a
        hop and a query on every request of an open service; a first key made elsewhere is then seen within
        ``trust_s``); a token is always checked, so a revoked key fails at once."""
        known = self._required
        if not token and known is not None and time.monotonic() - known[1] < trust_s:
            return None, known[0]

        def both() -> tuple[ApiKey | None, bool]:
            key = self.check(token) if token else None
            if key is not None:
                return key, True
            asked_at = time.monotonic()
            required = self.required()
            self._required = (required, asked_at)
            return None, required

        return await asyncio.to_thread(both)
