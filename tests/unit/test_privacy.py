"""What leaves the memory database never names a user: pseudonyms, access-log lines; and a chat turn
that failed stores the user's words but never an empty reply."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import pytest
from langchain_core.tools import StructuredTool

from driftrec.agent.chat import ChatAgent, ChatOptions
from driftrec.memory.conversation import ConversationStore, StatementStore
from driftrec.memory.db import SqliteDatabase
from driftrec.privacy import SUBJECT, acting_for, pseudonym
from driftrec.server.logs import RedactUsers


def test_pseudonyms_are_keyed_stable_and_do_not_contain_the_id(tmp_path: Path) -> None:
    key = SqliteDatabase(tmp_path / "m.db").pseudonym_key()
    assert pseudonym("ada", key) == pseudonym("ada", key) != pseudonym("bob", key)
    assert "ursula" not in pseudonym("ursula", key) and len(pseudonym("ada", key)) == 24  # (hex: "ada" could occur)
    other = SqliteDatabase(tmp_path / "other.db").pseudonym_key()
    assert pseudonym("ada", other) != pseudonym("ada", key)  # keyed: another store, another pseudonym
    # HMAC-SHA256's first 24 hex digits, as stores written by earlier versions hold them (Chroma's metadata)
    for user in ("ada", "u-1", "é\udc80"):
        raw = user.encode("utf-8", "surrogatepass")
        assert pseudonym(user, key) == hmac.new(key, raw, hashlib.sha256).hexdigest()[:24]


def test_llm_calls_are_marked_with_the_user_they_are_made_for() -> None:
    assert SUBJECT.get() is None
    with acting_for("abc"):
        assert SUBJECT.get() == "abc"
    assert SUBJECT.get() is None


def test_access_log_lines_show_the_pseudonym_not_the_user_id() -> None:
    line = ("1.2.3.4", "DELETE", "/v1/users/ada%20l/chat?x=1", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', line, None)
    RedactUsers(lambda user: f"tag-of-{len(user)}").filter(record)
    assert record.getMessage() == '1.2.3.4 - "DELETE /v1/users/~tag-of-5/chat?x=1 HTTP/1.1" 200'


class _Broken:
    def tools(self, user: str) -> list:
        async def recommend(**_: object) -> str:
            raise RuntimeError("retrieval is down")

        return [StructuredTool.from_function(coroutine=recommend, name="recommend", description="d")]

    def find_item(self, text: str) -> None:
        return None


async def test_a_failed_chat_turn_stores_the_user_turn_and_no_empty_reply(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "m.db")
    conversations = ConversationStore(db)
    agent = ChatAgent(None, _Broken(), conversations, StatementStore(db), ChatOptions(mode="plan"))
    with pytest.raises(RuntimeError, match="retrieval is down"):
        async for _ in agent.reply("ada", "recommend something"):
            pass
    _, turns = await conversations.state("ada")
    assert [(t.role, t.content) for _, t in turns] == [("user", "recommend something")]
