"""The chat agent: conversation memory, stated preferences, and two ways to choose a tool.

- ``plan`` (small models): the LLM fills one schema-constrained ``NextAction`` (tool name and
  arguments, genres as an enum of the catalog's); driftrec validates it and invokes that LangChain tool.
- ``tools`` (native tool calling): the model is offered the same LangChain tools as OpenAI function
  specs and calls one itself (``tool_choice="required"`` by default, so vLLM constrains the call to the
  tools' schemas: small models wrap free-form calls in Markdown otherwise). The call goes through
  LLMClient (concurrency, retries, cache, log, usage) and is validated against the tool's schema; a
  server without tool support, an unknown tool, invalid arguments or a time-out degrades this turn to
  ``plan`` mode, and the turn says so (``last_turn``), never a broken stream.

Either way the LLM then writes a short lead sentence from the tool's result, and the result itself is
appended verbatim (so the list the user sees is never misquoted); every message first goes through the
stated-preference reader, whose dislikes the tool arguments can add to but never drop; and long
conversations are folded into a running summary once the verbatim turns exceed the history budget.

The agent is wired once with what it uses (the LLM, a tools facade, the conversation and statement
stores, its options), the way vLLM's OpenAIServingChat is: it never reaches into the Recommender.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, ValidationError, create_model

from driftrec.agent.requests import Constraints, parse_request
from driftrec.agent.signals import SYNONYMS, stated_preferences
from driftrec.agent.tools import QUERY_CHARS
from driftrec.llm import LLM, LLMError
from driftrec.llm.bounds import reply_room
from driftrec.memory.conversation import ConversationStore, StatementStore
from driftrec.models import ChatTurn, Item, StatedPreference
from driftrec.prompts import PromptError, render

log = logging.getLogger(__name__)

ACTIONS = ("recommend", "search", "show_profile", "feedback", "explain", "answer")
KEEP_TURNS = 4  # turns always kept verbatim when folding
FOLD_REPLY_TOKENS = 200  # a summary's reply, at least: it grows into the window its prompt leaves (llm/bounds.py)
PLAN_REPLY_TOKENS = 160  # a plan's, likewise
TOOLS_BUDGET = 1200  # the tool specs vLLM adds to the prompt, and the call itself


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


class ChatFacade(Protocol):
    """What the agent may do: the tools bound to a user, and finding an item by title or id."""

    def tools(self, user: str) -> list[BaseTool]: ...

    def find_item(self, text: str) -> Item | None: ...


@dataclass(frozen=True)
class ChatOptions:
    mode: Literal["plan", "tools"] = "plan"
    tool_choice: Literal["required", "auto"] = "required"
    vocabulary: tuple[str, ...] = tuple(sorted(SYNONYMS))
    statement_hours: float = 24.0
    history_tokens: int = 1500
    latest_year: int | None = None  # the catalog's newest year: what "recent" means


@dataclass
class TurnInfo:
    """How a turn was handled: the mode that chose the tool, the tool and arguments, why it degraded."""

    mode: str
    action: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)  # what the tool ran with (after the guard rails)
    model_arguments: dict[str, Any] = field(default_factory=dict)  # what the model itself asked for
    degraded: str | None = None  # why native tool calling fell back to plan mode


class ChatAgent:
    def __init__(
        self,
        llm: LLM | None,
        facade: ChatFacade,
        conversations: ConversationStore,
        statements: StatementStore,
        options: ChatOptions,
    ):
        self.llm = llm
        self.facade = facade
        self.conversations = conversations
        self.statements = statements
        self.options = options
        self.vocabulary = list(options.vocabulary)
        self.last_turn: dict[str, TurnInfo] = {}

    @property
    def mode(self) -> str:
        return self.options.mode

    async def reply(self, user: str, message: str) -> AsyncIterator[str]:
        """Handle one user message; yields the reply in pieces as it is produced."""
        await self.statements.add(stated_preferences(user, message, self.vocabulary))
        stated = await self.statements.active(user, datetime.now(UTC), self.options.statement_hours)
        summary, turns = await self._context(user)
        pieces: list[str] = []
        try:
            if self.options.mode == "tools" and self.llm is not None:
                stream = self._tools_mode(user, message, summary, turns, stated)
            else:
                self.last_turn[user] = TurnInfo(mode="plan")
                stream = self._plan_mode(user, message, summary, turns, stated)
            async for piece in stream:
                pieces.append(piece)
                yield piece
        finally:  # the user's turn always; the assistant's only if one was written (never an empty turn)
            reply = "".join(pieces).strip()
            turns = [ChatTurn(role="user", content=message)]
            if reply:
                turns.append(ChatTurn(role="assistant", content=reply[:20000]))
            await self.conversations.append(user, *turns)

    # -- conversation memory ----------------------------------------------------------------------

    async def _context(self, user: str) -> tuple[str, list[ChatTurn]]:
        """The running summary and the verbatim turns, folding older turns first if they are too long.

        Folding is hierarchical: older turns go into the summary a slice at a time, each slice sized to
        fit the fold prompt, so a conversation of any length folds; a slice that fails stops the fold
        there (what was folded stays folded) and the turns after it are still sent, newest first, as
        many as fit the budget."""
        llm = self.llm
        summary, numbered = await self.conversations.state(user)
        turns = [t for _, t in numbered]
        budget = self.options.history_tokens
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
                reply = reply_room(
                    _Summary, FOLD_REPLY_TOKENS, context_window=llm.context_window, prompt_tokens=prompt.tokens
                )
                result = await llm.client.structured(prompt.messages, _Summary, max_tokens=reply)
            except (LLMError, PromptError) as exc:
                log.warning("could not fold a conversation, sending the newest turns that fit: %s", exc)
                break
            summary = result.value.summary
            await self.conversations.fold(user, chunk[-1][0], summary)
        summary, numbered = await self.conversations.state(user)
        return summary, _newest_within([t for _, t in numbered], lambda t: llm.tokens.count(t.content), budget)

    # -- plan-first -------------------------------------------------------------------------------

    async def plan(self, user: str, message: str, summary: str, turns: Sequence[ChatTurn]) -> BaseModel | None:
        """The LLM's next action, or None if it could not give a valid one."""
        llm = self.llm
        if llm is None:
            return None
        schema = plan_schema(self.vocabulary)
        try:
            prompt = render(
                "chat_plan",
                {"summary": summary, "turns": [t.model_dump() for t in turns], "message": message},
                counter=llm.tokens,
                budget=llm.context_window - PLAN_REPLY_TOKENS,
            )
            reply = reply_room(
                schema, PLAN_REPLY_TOKENS, context_window=llm.context_window, prompt_tokens=prompt.tokens
            )
            return (await llm.client.structured(prompt.messages, schema, max_tokens=reply)).value
        except (LLMError, PromptError) as exc:
            log.warning("chat plan failed, recommending instead: %s", exc)
            return None

    async def _plan_mode(
        self, user: str, message: str, summary: str, turns: list[ChatTurn], stated: list
    ) -> AsyncIterator[str]:
        plan = await self.plan(user, message, summary, turns)
        model = plan.model_dump() if plan is not None else {}  # before _arguments adjusts the plan
        action, args = self._arguments(plan, message, stated)
        info = self.last_turn.setdefault(user, TurnInfo(mode="plan"))
        info.action, info.arguments = action, args
        if info.degraded is None:  # a plan of its own, not a fallback from tool calling
            info.model_arguments = model
        tools = {t.name: t for t in self.facade.tools(user)}
        name = "show_profile" if action == "answer" else TOOL_OF[action]
        result = await tools[name].ainvoke(args if action != "answer" else {})
        async for piece in self._finish(message, action, str(result), summary):
            yield piece

    async def _finish(self, message: str, action: str, result: str, summary: str) -> AsyncIterator[str]:
        """The LLM's lead sentence about the tool's result, then the result verbatim."""
        async for piece in self._lead(message, action, result, summary):
            yield piece
        if action != "answer":
            for line in ("\n\n" + result).splitlines(keepends=True):  # a line at a time, as it is shown
                yield line

    def _arguments(self, plan: BaseModel | None, message: str, stated: list) -> tuple[str, dict[str, Any]]:
        """Validate the plan against what can be executed; anything unusable becomes "recommend".

        ``stated`` are the user's active stated preferences (this message's included): the plan may add
        genres, but never one the user said they do not want.
        """
        if plan is None:
            return "recommend", self._constraints(message, stated, [], [])
        p: Any = plan
        wanted = self._constraints(message, stated, p.genres, p.exclude_genres, query=p.query)
        p.action = self._settle(p.action, message, stated, item=p.item, signal=p.signal)
        if p.action == "search":
            return "search", {"text": wanted.pop("query"), **wanted}
        if p.action == "feedback":
            return "feedback", {"item": p.item, "signal": p.signal}
        if p.action == "explain":
            return "explain", {"item": p.item}
        if p.action in ("show_profile", "answer"):
            return p.action, {}
        return "recommend", wanted

    def _settle(
        self, action: str, message: str, stated: Sequence[StatedPreference], *, item: str = "", signal: str = "none"
    ) -> str:
        """The action a turn runs: the model's choice, unless it cannot run or the message says otherwise.

        The same rule for a plan and for a native tool call: feedback or an explanation needs an item the
        catalog has (and feedback a signal), else the user gets recommendations; a message that states
        what the user wants ("thrillers released after 1993", "show me a drama, nothing too scary") or asks
        for suggestions gets personal recommendations, not a catalog search, the profile or a chat answer
        (Qwen2.5-Coder-0.5B answered such requests with a search); a question about the profile shows it."""
        if action in ("feedback", "explain") and (not item or self.facade.find_item(item) is None):
            action = "recommend"
        if action == "feedback" and signal not in ("like", "dislike"):
            action = "recommend"
        just_stated = any(s.text == message.strip()[:4000] for s in stated)
        asks = _asks_for(message)
        if (just_stated or asks == "recommend") and action in ("answer", "show_profile", "search"):
            return "recommend"  # the user told us what they want, or asked for suggestions: personal ones
        if asks == "profile" and action == "answer":
            return "show_profile"
        return action

    def _constraints(
        self,
        message: str,
        stated: list[StatedPreference],
        genres: list[str],
        exclude: list[str],
        *,
        query: str = "",
        year_min: int | None = None,
        year_max: int | None = None,
    ) -> dict[str, Any]:
        """The tool arguments a request comes to: what the request plainly states (agent/requests.py),
        the user's active stated preferences, and what the model read (``genres``, ``exclude``, years)
        where it is grounded in the message. The model's reading counts only for genres the message
        mentions, and never against the parser's polarity for the same genre (the parser reads negation
        scope; a 0.5B model was seen refusing Comedy in "something funny, no horror"); its year bounds
        count only when the message names a year or decade the parser did not read. A refused genre is
        never asked for; genres outside the vocabulary are dropped; the query text loses its refusals."""
        known = {g.lower(): g for g in self.vocabulary}

        def names(values: object) -> list[str]:
            items = values if isinstance(values, list) else []
            return [known[str(v).lower()] for v in items if str(v).lower() in known]

        request = parse_request(message, self.vocabulary, latest_year=self.options.latest_year)
        read = {g: "like" for g in request.genres} | {g: "dislike" for g in request.exclude_genres}

        def grounded(values: list[str], polarity: str) -> list[str]:
            return [g for g in values if read.get(g, polarity) == polarity and (g in read or mentions(message, g))]

        said = Constraints(
            genres=[s.name for s in stated if s.polarity == "like"],
            exclude_genres=[s.name for s in stated if s.polarity == "dislike"],
        )
        dated = request.year_min is None and request.year_max is None and bool(_YEARISH.search(message))
        model = Constraints(
            grounded(names(genres), "like"),
            grounded(names(exclude), "dislike"),
            year_min if dated else None,
            year_max if dated else None,
        )
        c = request.merged(said).merged(model)
        return {
            "query": (request.query or query or message)[:QUERY_CHARS],
            "genres": c.genres,
            "exclude_genres": c.exclude_genres,
            "year_min": c.year_min,
            "year_max": c.year_max,
        }

    async def _lead(self, message: str, action: str, result: str, summary: str) -> AsyncIterator[str]:
        """One or two sentences from the LLM about the result; nothing if it is unavailable, or if it only
        copies a line of the result (small models start the list themselves: "1. Vermin (1998) …").
        Held back until complete (at most 60 tokens) so a copy is never shown."""
        llm = self.llm
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
                        written += piece.split("\n", 1)[0]
                        break
                    written += piece
            lead = written.strip()
            if lead and (action == "answer" or not _copies(lead, result)):
                yield lead
        except (LLMError, PromptError) as exc:
            log.warning("chat reply failed: %s", exc)

    # -- native tool calling ---------------------------------------------------------------------

    async def _tools_mode(
        self, user: str, message: str, summary: str, turns: list[ChatTurn], stated: list[StatedPreference]
    ) -> AsyncIterator[str]:
        """The model calls one of the tools itself; any failure degrades this turn to plan mode."""
        llm = self.llm
        assert llm is not None
        tools = {t.name: t for t in self.facade.tools(user)}
        specs = [convert_to_openai_tool(t) for t in tools.values()]
        try:
            prompt = render(
                "chat_tools",
                {
                    "genres": ", ".join(self.vocabulary),
                    "summary": summary,
                    "turns": [t.model_dump() for t in turns[-KEEP_TURNS:]],
                    "message": message,
                },
                counter=llm.tokens,
                budget=llm.context_window - TOOLS_BUDGET,
            )
            call = await llm.client.tool_call(
                prompt.messages, specs, tool_choice=self.options.tool_choice, max_tokens=200
            )
            name, arguments = call.name, dict(call.arguments)
            if name not in tools:
                raise _Unusable(f"unknown tool {call.name!r}")
            action = ACTION_OF[name]
            settled = self._settle(
                action, message, stated, item=str(arguments.get("item") or ""), signal=str(arguments.get("signal"))
            )
            if settled != action:  # e.g. a search for "thrillers released after 1993": their recommendations
                text = arguments.get("text") if action == "search" else None
                name, arguments = TOOL_OF[settled], {**arguments, "query": text}  # keys it does not take go below
            tool = tools[name]
            arguments = self._guard(name, arguments, message, stated)
            arguments = {k: v for k, v in arguments.items() if k in tool.args}  # e.g. a stray "type": "object"
            if tool.args_schema is not None and isinstance(tool.args_schema, type):
                tool.args_schema.model_validate(arguments)
        except (LLMError, PromptError, _Unusable, ValidationError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("native tool calling failed for this turn, using plan mode: %s", reason)
            self.last_turn[user] = TurnInfo(mode="plan", degraded=reason)
            async for piece in self._plan_mode(user, message, summary, turns, stated):
                yield piece
            return
        self.last_turn[user] = TurnInfo(mode="tools", action=name, arguments=arguments, model_arguments=call.arguments)
        result = await tool.ainvoke(arguments)
        action = ACTION_OF.get(name, "answer")
        async for piece in self._finish(message, action, str(result), summary):
            yield piece

    def _guard(
        self, name: str, arguments: dict[str, Any], message: str, stated: list[StatedPreference]
    ) -> dict[str, Any]:
        """The same guard rails as plan mode (``_constraints``) on the model's own call."""
        if name not in ("recommend", "search_catalog"):
            return arguments

        def year(key: str) -> int | None:
            value = arguments.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        merged = self._constraints(
            message,
            stated,
            arguments.get("genres") or [],
            arguments.get("exclude_genres") or [],
            query=str(arguments.get("query") or arguments.get("text") or ""),
            year_min=year("year_min"),
            year_max=year("year_max"),
        )
        text = merged.pop("query")
        if name == "search_catalog":
            return {**arguments, **merged, "text": str(arguments.get("text") or text)}
        out = {**arguments, **merged, "query": text}
        if "k" in out and str(out["k"]) not in re.findall(r"\d+", message):
            del out["k"]  # how many: the user's number, else the tool's default (Qwen 0.5B picked 2 or 3)
        return out


class _Unusable(Exception):
    """A tool call driftrec cannot run."""


TOOL_OF = {
    "recommend": "recommend",
    "search": "search_catalog",
    "show_profile": "show_profile",
    "feedback": "record_feedback",
    "explain": "explain_recommendation",
}
ACTION_OF = {tool: action for action, tool in TOOL_OF.items()}


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


_YEARISH = re.compile(r"\d|twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties|century", re.I)


def _copies(lead: str, result: str) -> bool:
    """Whether the lead is a numbered item or repeats a line of the result."""
    if re.match(r"^\s*\d+[.)]\s", lead):
        return True
    flat = " ".join(lead.lower().split())
    return any(flat and flat in " ".join(line.lower().split()) for line in result.splitlines() if line.strip())


def mentions(message: str, genre: str) -> bool:
    """Whether ``message`` names ``genre``: the genre or one of its words in agent/signals.py, as whole
    words ("war film" names War, "award" does not)."""
    text = " " + " ".join(re.sub(r"[^a-z0-9'-]+", " ", message.lower()).split()) + " "
    words = (genre.lower(), *SYNONYMS.get(genre, ()))
    return any(f" {w} " in text for w in words)
