"""The chat agent: conversation memory, stated preferences, and two ways to use the tools.

- ``plan`` (small models, the embedded default): the LLM fills one schema-constrained ``NextAction``
  (tool name and arguments, genres as an enum of the catalog's); driftrec validates it and invokes
  that LangChain tool; the LLM then writes a short lead sentence from the tool's result, and the
  result itself is appended verbatim (so the list the user sees is never misquoted).
- ``tools`` (capable models behind a vLLM started with ``--enable-auto-tool-choice`` and the model's
  ``--tool-call-parser``): LangChain's agent lets the model call the same tools itself.

Either way, every message first goes through the stated-preference reader, so "I'm tired of horror"
steers the next recommendations even if the model misses it; and long conversations are folded into a
running summary once the verbatim turns exceed ``chat_history_tokens``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, create_model

from driftrec.agent.signals import SYNONYMS, stated_preferences
from driftrec.agent.tools import make_tools
from driftrec.llm import LLMError
from driftrec.models import ChatTurn
from driftrec.prompts import PromptError, render

if TYPE_CHECKING:
    from driftrec.agent.recommender import Recommender

log = logging.getLogger(__name__)

ACTIONS = ("recommend", "search", "show_profile", "feedback", "explain", "answer")
KEEP_TURNS = 4  # turns always kept verbatim when folding
FOLD_REPLY_TOKENS = 200


def plan_schema(vocabulary: Sequence[str]) -> type[BaseModel]:
    genre: Any = Literal[tuple(vocabulary)] if vocabulary else str  # type: ignore[valid-type]
    return create_model(
        "NextAction",
        action=(Literal[ACTIONS], ...),  # type: ignore[valid-type]
        query=(str, Field(default="", max_length=120)),
        genres=(list[genre], Field(default_factory=list, max_length=3)),
        exclude_genres=(list[genre], Field(default_factory=list, max_length=3)),
        item=(str, Field(default="", max_length=120)),
        signal=(Literal["like", "dislike", "none"], "none"),
    )


class _Summary(BaseModel):
    summary: str = Field(max_length=600)


class ChatAgent:
    def __init__(self, rec: Recommender, mode: Literal["auto", "plan", "tools"] | None = None):
        self.rec = rec
        mode = mode or rec.settings.chat_mode
        self.mode = ("plan" if rec.settings.embedded else "tools") if mode == "auto" else mode
        memory = rec.memory
        self.vocabulary = list(memory.vocabulary) if memory and memory.vocabulary else sorted(SYNONYMS)

    async def reply(self, user: str, message: str) -> AsyncIterator[str]:
        """Handle one user message; yields the reply in pieces as it is produced."""
        memory = self.rec.memory
        assert memory is not None
        await self.rec.state(user, stated_preferences(user, message, self.vocabulary))
        stated = await memory.statements.active(user, datetime.now(UTC), self.rec.settings.memory_statement_hours)
        summary, turns = await self._context(user)
        pieces: list[str] = []
        try:
            if self.mode == "tools" and self.rec.llm is not None:
                stream = self._tools_mode(user, message, summary, turns)
            else:
                stream = self._plan_mode(user, message, summary, turns, stated)
            async for piece in stream:
                pieces.append(piece)
                yield piece
        finally:  # the user's turn always; the assistant's only if one was written (never an empty turn)
            reply = "".join(pieces).strip()
            turns = [ChatTurn(role="user", content=message)]
            if reply:
                turns.append(ChatTurn(role="assistant", content=reply[:20000]))
            await memory.conversations.append(user, *turns)

    # -- conversation memory ----------------------------------------------------------------------

    async def _context(self, user: str) -> tuple[str, list[ChatTurn]]:
        """The running summary and the verbatim turns, folding older turns first if they are too long.

        Folding is hierarchical: older turns go into the summary a slice at a time, each slice sized to
        fit the fold prompt, so a conversation of any length folds; a slice that fails stops the fold
        there (what was folded stays folded) and the turns after it are still sent, newest first, as
        many as fit the budget."""
        memory = self.rec.memory
        llm = self.rec.llm
        assert memory is not None
        summary, numbered = await memory.conversations.state(user)
        turns = [t for _, t in numbered]
        budget = self.rec.settings.chat_history_tokens
        if llm is None or len(numbered) <= KEEP_TURNS:
            return summary, turns
        if sum(llm.tokens.count(t.content) for t in turns) <= budget:
            return summary, turns
        old = numbered[:-KEEP_TURNS]
        slice_tokens = max(200, (llm.context_window - FOLD_REPLY_TOKENS) // 2)
        for chunk in _slices(old, lambda t: llm.tokens.count(t.content), slice_tokens):
            turns_text = [
                t.model_copy(update={"content": llm.tokens.truncate(t.content, slice_tokens)}) for _, t in chunk
            ]
            try:
                prompt = render(
                    "chat_summary",
                    {"previous": summary, "turns": turns_text},
                    counter=llm.tokens,
                    budget=llm.context_window - FOLD_REPLY_TOKENS,
                )
                result = await llm.client.structured(prompt.messages, _Summary, max_tokens=FOLD_REPLY_TOKENS)
            except (LLMError, PromptError) as exc:
                log.warning("could not fold a conversation, sending the newest turns that fit: %s", exc)
                break
            summary = result.value.summary
            await memory.conversations.fold(user, chunk[-1][0], summary)
        summary, numbered = await memory.conversations.state(user)
        return summary, _newest_within([t for _, t in numbered], lambda t: llm.tokens.count(t.content), budget)

    # -- plan-first -------------------------------------------------------------------------------

    async def plan(self, user: str, message: str, summary: str, turns: Sequence[ChatTurn]) -> BaseModel | None:
        """The LLM's next action, or None if it could not give a valid one."""
        llm = self.rec.llm
        if llm is None:
            return None
        schema = plan_schema(self.vocabulary)
        try:
            prompt = render(
                "chat_plan",
                {"summary": summary, "turns": [t.model_dump() for t in turns], "message": message},
                counter=llm.tokens,
                budget=llm.context_window - 160,
            )
            return (await llm.client.structured(prompt.messages, schema, max_tokens=160)).value
        except (LLMError, PromptError) as exc:
            log.warning("chat plan failed for %s, recommending instead: %s", user, exc)
            return None

    async def _plan_mode(
        self, user: str, message: str, summary: str, turns: list[ChatTurn], stated: list
    ) -> AsyncIterator[str]:
        plan = await self.plan(user, message, summary, turns)
        action, args = self._arguments(plan, message, stated)
        tools = {t.name: t for t in make_tools(self.rec, user)}
        if action == "answer":
            result = await tools["show_profile"].ainvoke({})
        else:
            name = {
                "recommend": "recommend",
                "search": "search_catalog",
                "show_profile": "show_profile",
                "feedback": "record_feedback",
                "explain": "explain_recommendation",
            }[action]
            result = await tools[name].ainvoke(args)
        async for piece in self._lead(message, action, str(result), summary):
            yield piece
        if action != "answer":
            yield "\n\n" + str(result)

    def _arguments(self, plan: BaseModel | None, message: str, stated: list) -> tuple[str, dict[str, Any]]:
        """Validate the plan against what can be executed; anything unusable becomes "recommend".

        ``stated`` are the user's active stated preferences (this message's included): the plan may add
        genres, but never one the user said they do not want.
        """
        just_stated = [s for s in stated if s.text == message.strip()[:4000]]
        dislikes = [s.name for s in stated if s.polarity == "dislike"]
        likes = [s.name for s in stated if s.polarity == "like"]
        if plan is None:
            return "recommend", {"query": message, "genres": likes, "exclude_genres": dislikes}
        p: Any = plan
        genres = list(dict.fromkeys([*p.genres, *likes]))
        exclude = [g for g in dict.fromkeys([*p.exclude_genres, *dislikes]) if g not in likes]
        genres = [g for g in genres if g not in exclude]
        if p.action in ("feedback", "explain") and (not p.item or self.rec.find_item(p.item) is None):
            p.action = "recommend"
        if p.action == "feedback" and p.signal == "none":
            p.action = "recommend"
        asks = _asks_for(message)
        if (just_stated or asks == "recommend") and p.action in ("answer", "show_profile"):
            p.action = "recommend"  # the user told us what they want, or asked for it: show it
        elif asks == "profile" and p.action == "answer":
            p.action = "show_profile"
        if p.action == "search":
            return "search", {"text": p.query or message, "genres": genres, "exclude_genres": exclude}
        if p.action == "feedback":
            return "feedback", {"item": p.item, "signal": p.signal}
        if p.action == "explain":
            return "explain", {"item": p.item}
        if p.action in ("show_profile", "answer"):
            return p.action, {}
        return "recommend", {"query": p.query or message, "genres": genres, "exclude_genres": exclude}

    async def _lead(self, message: str, action: str, result: str, summary: str) -> AsyncIterator[str]:
        """One or two sentences from the LLM about the result, streamed; nothing if it is unavailable."""
        llm = self.rec.llm
        if llm is None:
            return
        try:
            prompt = render(
                "chat_reply",
                {"message": message, "action": action, "result": result, "summary": summary},
                counter=llm.tokens,
                budget=llm.context_window - 80,
            )
            written = ""
            async with contextlib.aclosing(llm.client.stream_chat(prompt.messages, max_tokens=60)) as stream:
                async for piece in stream:
                    if "\n" in piece and written.strip():  # one paragraph; small models ramble past it
                        yield piece.split("\n", 1)[0]
                        break
                    written += piece
                    if written.strip():
                        yield piece.lstrip("\n") if written.strip() == piece.strip() else piece
        except (LLMError, PromptError) as exc:
            log.warning("chat reply failed: %s", exc)

    # -- native tool calling ----------------------------------------------------------------------

    async def _tools_mode(self, user: str, message: str, summary: str, turns: list[ChatTurn]) -> AsyncIterator[str]:
        """LangChain's agent with the model calling tools itself (needs a tool-calling model and server)."""
        from langchain.agents import create_agent
        from langchain_openai import ChatOpenAI

        llm = self.rec.llm
        assert llm is not None
        model = ChatOpenAI(
            base_url=llm.client.base_url,
            model=llm.client.model,
            api_key=self.rec.settings.llm_api_key.get_secret_value(),
            temperature=self.rec.settings.llm_temperature,
            timeout=self.rec.settings.llm_timeout_s,
            streaming=True,
        )
        agent = create_agent(
            model,
            make_tools(self.rec, user),
            system_prompt="You are a movie recommender. Use the tools; never invent movies. "
            + (f"Earlier in this conversation: {summary}" if summary else ""),
        )
        history = [{"role": t.role, "content": t.content} for t in turns]
        async for chunk, _meta in agent.astream(
            {"messages": [*history, {"role": "user", "content": message}]}, stream_mode="messages"
        ):
            if getattr(chunk, "type", "") == "AIMessageChunk" and isinstance(chunk.content, str) and chunk.content:
                yield chunk.content


def _slices(items: list, size: Callable[[Any], int], limit: int) -> list[list]:
    """Consecutive runs of ``(seq, turn)`` items whose turns add up to at most ``limit`` tokens each."""
    runs: list[list] = [[]]
    used = 0
    for item in items:
        cost = min(size(item[1]), limit)
        if runs[-1] and used + cost > limit:
            runs.append([])
            used = 0
        runs[-1].append(item)
        used += cost
    return [r for r in runs if r]


def _newest_within(turns: list[ChatTurn], size: Callable[[ChatTurn], int], budget: int) -> list[ChatTurn]:
    """The newest turns whose sizes add up to at most ``budget`` (always at least the last one)."""
    kept: list[ChatTurn] = []
    used = 0
    for turn in reversed(turns):
        cost = size(turn)
        if kept and used + cost > budget:
            break
        kept.append(turn)
        used += cost
    return kept[::-1]


_RECOMMEND_WORDS = ("recommend", "suggest", "what should i watch", "something", "anything", "watch tonight", "ideas")
_PROFILE_WORDS = ("my profile", "my taste", "what do you know about me", "my interests")


def _asks_for(message: str) -> str | None:
    """What the user plainly asked for, when they did: a guard rail on a small model's plan."""
    lowered = message.lower()
    if any(w in lowered for w in _PROFILE_WORDS):
        return "profile"
    if any(w in lowered for w in _RECOMMEND_WORDS):
        return "recommend"
    return None
