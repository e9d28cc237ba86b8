"""An async client for any OpenAI-compatible server (vLLM's is the contract).

Three kinds of call, each what one part of driftrec needs:
- ``chat``: plain completion (explanations, chat replies), also streamed;
- ``structured``: the reply is constrained to a pydantic model's JSON schema and validated into it
  (summaries, profile updates, listwise rankings, agent plans);
- ``label_logprobs``: one forward pass, the next-token log-probabilities of a fixed set of labels
  (verbalizer ranking).

Every call has a time-out, bounded retries with exponential backoff on connection errors and 5xx, a
concurrency limit, typed errors, and usage accounting; every prompt and response can be appended to a
JSONL log.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from driftrec.llm.cache import ResponseCache, cache_key
from driftrec.llm.errors import InvalidLLMOutput, LLMRequestError, LLMTimeout, LLMUnavailable
from driftrec.privacy import SUBJECT

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
Message = dict[str, str]


@dataclass
class Usage:
    """Token and time accounting; one per call, and running totals per client."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    seconds: float = 0.0
    cached: int = 0  # calls answered from the response cache
    queued_s: float = 0.0  # time spent waiting for a concurrency slot (part of ``seconds``)

    FIELDS = ("calls", "prompt_tokens", "completion_tokens", "retries", "failures", "seconds", "cached", "queued_s")

    def add(self, other: Usage) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.FIELDS}


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    usage: Usage
    reasoning: str = ""  # a reasoning block read past (or the server's separate reasoning field)


@dataclass
class StructuredResult(Generic[T]):
    value: T
    raw: str
    usage: Usage


@dataclass
class ToolCall:
    """One function call the model made: the tool's name and its arguments (parsed JSON, not yet
    validated against the tool's schema: that is the caller's, who knows the tools)."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw: str
    usage: Usage


@dataclass
class LabelScores:
    """Log-probability of each label as the next token; labels the server did not return get -inf."""

    logprobs: dict[str, float]
    chosen: str
    usage: Usage
    missing: list[str] = field(default_factory=list)

    def ranked(self) -> list[str]:
        return sorted(self.logprobs, key=lambda label: self.logprobs[label], reverse=True)


class JsonlLog:
    """Appends one JSON object per LLM call; writes happen in a thread so the loop never blocks.

    Calls made for a user (``privacy.acting_for``) go to that user's own file beside the main log,
    ``<log>.users/<pseudonym>.jsonl``, so forgetting the user deletes one file."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = asyncio.Lock()

    def path_for(self, subject: str | None) -> Path:
        return self.path if subject is None else self.path.with_name(self.path.name + ".users") / f"{subject}.jsonl"

    async def write(self, record: dict[str, Any], subject: str | None = None) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        path = self.path_for(subject)

        def append() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line)

        async with self._lock:
            await asyncio.to_thread(append)

    async def forget(self, subject: str) -> int:
        """Delete the subject's log file; returns how many records it held."""
        path = self.path_for(subject)

        def remove() -> int:
            if not path.exists():
                return 0
            count = sum(1 for _ in path.open(encoding="utf-8"))
            path.unlink()
            return count

        async with self._lock:
            return await asyncio.to_thread(remove)


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def strip_reasoning(text: str) -> str:
    """The answer after a reasoning block (``<think>...</think>``) a chat template may open.

    An unclosed block means the reply was all reasoning (cut off before the answer): nothing is left."""
    head = text.lstrip()
    if not head.startswith(THINK_OPEN):
        return text
    _, closed, answer = head.partition(THINK_CLOSE)
    return answer.lstrip() if closed else ""


class ReasoningFilter:
    """Streams a reply's text with a leading reasoning block held back (the user sees the answer)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._done = False

    def feed(self, piece: str) -> str:
        if self._done:
            return piece
        self._buffer += piece
        head = self._buffer.lstrip()
        if len(head) < len(THINK_OPEN) and THINK_OPEN.startswith(head):
            return ""  # could still become "<think>"
        if not head.startswith(THINK_OPEN):
            self._done = True
            return self._buffer
        if THINK_CLOSE not in head:
            return ""
        self._done = True
        return head.partition(THINK_CLOSE)[2].lstrip()


def schema_format(model: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` that makes vLLM constrain decoding to ``model``'s JSON schema."""
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema(), "strict": True},
    }


class LLMClient:
    """One endpoint, one served model. Safe to share between many concurrent tasks."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_concurrency: int = 8,
        temperature: float = 0.0,
        seed: int | None = 0,
        log_path: Path | None = None,
        vllm_extensions: bool = True,
        choice_param: str | None = "structured_outputs",
        cache_path: Path | None = None,
        precision: str | None = None,
    ):
        self.base_url = base_url
        self.model = model
        # The embedded server's dtype: a bfloat16 server's replies differ from a float32 one's, so a cached
        # reply is reused only by a server of the same model and precision.
        self.precision = precision
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.seed = seed
        self.vllm_extensions = vllm_extensions
        # How this server constrains a reply to a fixed set of strings: vLLM >= 0.10.2 "structured_outputs",
        # older vLLM "guided_choice", other servers nothing (capabilities.py detects it at connect).
        self.choice_param = choice_param if vllm_extensions else None
        # Set by capabilities.detect: the server's top-logprobs limit (vLLM's --max-logprobs, 20 by
        # default), which bounds a verbalizer window, and whether the chat template opens a reasoning
        # block (then vLLM is asked not to think, and any block is read past).
        self.max_logprobs = 20
        self.reasoning = False
        self.usage = Usage()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._waiting = 0  # calls waiting for a slot
        self._running = 0  # calls holding a slot (queued ones excluded)
        self._call_s: float | None = None  # moving average of a call's time once it has a slot
        self._log = JsonlLog(log_path) if log_path else None
        self.cache = ResponseCache(cache_path) if cache_path else None
        # Retries are ours (to classify and count them); the SDK's own are off.
        self._openai = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._openai.close()

    async def forget(self, subject: str) -> dict[str, int]:
        """Drop every cached response and prompt-log record made for the user with pseudonym ``subject``."""
        return {
            "cache": await self.cache.forget(subject) if self.cache else 0,
            "log": await self._log.forget(subject) if self._log else 0,
        }

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the three calls -------------------------------------------------------------------------

    async def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
        timeout_s: float | None = None,
        stop: list[str] | None = None,
    ) -> ChatResult:
        params = self._params(max_tokens, temperature) | ({"stop": stop} if stop else {})
        response, usage = await self._create("chat", messages, params, timeout_s)
        choice = response.choices[0]
        content = choice.message.content or ""
        answer = strip_reasoning(content)  # a reasoning block is never the answer, detected or not
        reasoning = content[: len(content) - len(answer)] if answer != content else ""
        reasoning = reasoning or getattr(choice.message, "reasoning_content", None) or ""
        return ChatResult(answer, choice.finish_reason, usage, str(reasoning))

    async def structured(
        self,
        messages: list[Message],
        schema: type[T],
        *,
        max_tokens: int = 512,
        temperature: float | None = None,
        timeout_s: float | None = None,
        sampling: dict[str, Any] | None = None,
    ) -> StructuredResult[T]:
        """A reply constrained to ``schema`` and validated into it.

        Raises InvalidLLMOutput when the reply was cut off by max_tokens, is not JSON, or does not
        validate: a constrained decoder can still be truncated, and non-vLLM servers may ignore the
        constraint. ``sampling`` adds OpenAI sampling parameters (e.g. ``presence_penalty``).
        """
        params = self._params(max_tokens, temperature) | (sampling or {}) | {"response_format": schema_format(schema)}
        response, usage = await self._create("structured", messages, params, timeout_s)
        choice = response.choices[0]
        raw = strip_reasoning(choice.message.content or "")
        if choice.finish_reason == "length":
            raise InvalidLLMOutput(
                f"{schema.__name__}: reply truncated at max_tokens={max_tokens}",
                raw=raw,
                finish_reason="length",
            )
        try:
            value = schema.model_validate_json(raw)
        except ValidationError as exc:
            kind = "is not JSON" if any(e["type"] == "json_invalid" for e in exc.errors()) else "does not validate"
            raise InvalidLLMOutput(
                f"{schema.__name__}: reply {kind}: {exc.errors()[0]['msg']}",
                raw=raw,
                finish_reason=choice.finish_reason,
            ) from exc
        return StructuredResult(value, raw, usage)

    async def label_logprobs(
        self,
        messages: list[Message],
        labels: list[str],
        *,
        timeout_s: float | None = None,
    ) -> LabelScores:
        """Score every label as the next token, in one forward pass.

        On vLLM the single generated token is constrained to the labels (``structured_outputs.choice``),
        and the returned log-probabilities are renormalized over exactly those labels, so every label
        comes back. Other servers get a plain top-logprobs request; labels outside the top 20 are -inf.
        """
        if not labels or len(set(labels)) != len(labels):
            raise ValueError("labels must be non-empty and distinct")
        if len(labels) > self.max_logprobs:
            raise ValueError(f"{len(labels)} labels exceed the server's top-logprobs limit ({self.max_logprobs})")
        params = self._params(1, 0.0) | {"logprobs": True, "top_logprobs": len(labels)}
        if self.choice_param == "structured_outputs":
            params["extra_body"] = params.get("extra_body", {}) | {"structured_outputs": {"choice": labels}}
        elif self.choice_param == "guided_choice":
            params["extra_body"] = params.get("extra_body", {}) | {"guided_choice": labels}
        response, usage = await self._create("label_logprobs", messages, params, timeout_s)
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs else None
        if not content:
            raise InvalidLLMOutput("label_logprobs: the server returned no logprobs", raw=choice.message.content)
        top = {entry.token.strip(): entry.logprob for entry in content[0].top_logprobs}
        scores = {label: top.get(label, -math.inf) for label in labels}
        missing = [label for label, value in scores.items() if value == -math.inf]
        if len(missing) == len(labels):
            raise InvalidLLMOutput(
                "label_logprobs: none of the labels is among the returned tokens", raw=choice.message.content
            )
        chosen = (choice.message.content or "").strip()
        return LabelScores(scores, chosen if chosen in scores else max(scores, key=scores.__getitem__), usage, missing)

    async def stream_chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """Yield the reply's text as it is generated."""
        params = self._params(max_tokens, temperature) | {
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        usage = Usage(calls=1)
        pieces: list[str] = []
        reasoning = ReasoningFilter()
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.timeout_s)
        except TimeoutError as exc:
            raise LLMTimeout(f"no free slot for a call to {self.base_url} within {self.timeout_s:.1f}s") from exc
        self._running += 1
        try:
            try:
                stream = await self._openai.chat.completions.create(model=self.model, messages=messages, **params)
                try:
                    async for chunk in stream:
                        if chunk.usage:
                            usage.prompt_tokens = chunk.usage.prompt_tokens
                            usage.completion_tokens = chunk.usage.completion_tokens
                        if chunk.choices and chunk.choices[0].delta.content:
                            pieces.append(chunk.choices[0].delta.content)
                            text = chunk.choices[0].delta.content
                            text = reasoning.feed(text)
                            if text:
                                yield text
                finally:  # the caller may stop early: close the HTTP stream now, not at garbage collection
                    await stream.close()
            except openai.APIError as exc:
                usage.failures = 1
                raise _classify(exc, self.timeout_s) from exc
            finally:
                usage.seconds = time.perf_counter() - started
                self.usage.add(usage)
                await self._write_log("stream_chat", messages, params, "".join(pieces), usage, None)
        finally:
            self._running -= 1
            self._semaphore.release()

    async def tool_call(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]],
        *,
        tool_choice: str | dict[str, Any] = "required",
        max_tokens: int = 256,
        timeout_s: float | None = None,
    ) -> ToolCall:
        """Ask the model to call one of ``tools`` (OpenAI function specs).

        ``tool_choice="required"`` (or a named function) makes vLLM constrain the reply to a valid call
        with structured outputs, which small models need; ``"auto"`` lets a capable model answer in
        words instead (then there is no call: InvalidLLMOutput). A server without tool support refuses
        the request (LLMRequestError). Raises InvalidLLMOutput for a truncated reply or arguments that
        are not a JSON object."""
        params = self._params(max_tokens, 0.0) | {"tools": tools, "tool_choice": tool_choice}
        response, usage = await self._create("tool_call", messages, params, timeout_s)
        choice = response.choices[0]
        calls = choice.message.tool_calls or []
        raw = json.dumps([c.model_dump() for c in calls]) if calls else (choice.message.content or "")
        if choice.finish_reason == "length":
            raise InvalidLLMOutput(f"tool_call: reply truncated at max_tokens={max_tokens}", raw=raw)
        if not calls:
            raise InvalidLLMOutput("tool_call: the model answered without calling a tool", raw=raw)
        call = calls[0]
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidLLMOutput(f"tool_call: arguments of {call.function.name} are not JSON", raw=raw) from exc
        if not isinstance(arguments, dict):
            raise InvalidLLMOutput(f"tool_call: arguments of {call.function.name} are not an object", raw=raw)
        return ToolCall(call.id, call.function.name, arguments, raw, usage)

    async def server_version(self) -> str | None:
        """vLLM's version (its ``/version`` route); None for a server that has no such route."""
        root = self.base_url.rstrip("/").removesuffix("/v1")
        try:
            async with httpx.AsyncClient(timeout=min(self.timeout_s, 10.0)) as http:
                reply = await http.get(f"{root}/version")
            return str(reply.json()["version"]) if reply.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def tokenize(self, text: str) -> int | None:
        """The server's own token count of ``text`` (vLLM's ``/tokenize``); None if it has no such route."""
        root = self.base_url.rstrip("/").removesuffix("/v1")
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                reply = await http.post(f"{root}/tokenize", json={"model": self.model, "prompt": text})
            if reply.status_code != 200:
                return None
            body = reply.json()
            return int(body["count"]) if "count" in body else len(body["tokens"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def list_models(self) -> list[dict[str, Any]]:
        """The served models as the server describes them (vLLM includes ``max_model_len``)."""
        page = await self._retrying(
            lambda left: self._openai.models.list(timeout=left), time.monotonic() + self.timeout_s, Usage()
        )
        return [m.model_dump() for m in page.data]

    # -- plumbing --------------------------------------------------------------------------------

    def _params(self, max_tokens: int, temperature: float | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
        }
        if self.seed is not None:
            params["seed"] = self.seed
        if self.reasoning and self.vllm_extensions:
            # Qwen3-style templates honour this; others ignore unknown template arguments.
            params["extra_body"] = {"chat_template_kwargs": {"enable_thinking": False}}
        return params

    def cache_key(self, kind: str, messages: list[Message], params: dict[str, Any]) -> str:
        """The response cache's key: the model (with the server's precision when known), the call and its
        parameters."""
        model = f"{self.model}@{self.precision}" if self.precision else self.model
        return cache_key(model, kind, messages, params)

    async def _create(
        self, kind: str, messages: list[Message], params: dict[str, Any], timeout_s: float | None
    ) -> tuple[Any, Usage]:
        usage = Usage(calls=1)
        started = time.perf_counter()
        response = error = None
        key = self.cache_key(kind, messages, params) if self.cache else None
        try:
            cached = await self.cache.get(key) if self.cache and key else None
            if cached is not None:
                response = ChatCompletion.model_validate_json(cached)
                usage.cached = 1
            else:
                response = await self._queued(
                    lambda left: self._openai.chat.completions.create(
                        model=self.model, messages=messages, timeout=left, **params
                    ),
                    timeout_s or self.timeout_s,
                    usage,
                )
                if self.cache and key and response.choices:
                    await self.cache.put(key, response.model_dump_json(), SUBJECT.get())
            if response.usage:
                usage.prompt_tokens = response.usage.prompt_tokens
                usage.completion_tokens = response.usage.completion_tokens or 0
            if not response.choices:
                raise InvalidLLMOutput(f"{kind}: the server returned no choices")
            return response, usage
        except Exception as exc:
            usage.failures = 1
            error = exc
            raise
        finally:
            usage.seconds = time.perf_counter() - started
            self.usage.add(usage)
            text = _reply_text(response)
            await self._write_log(kind, messages, params, text, usage, error)

    def expected_wait(self) -> float | None:
        """Seconds a new call would likely wait for a slot and run (None until a call has been timed)."""
        if self._call_s is None:
            return None
        rounds = (self._waiting + self._running) // self._max_concurrency + 1
        return rounds * self._call_s

    def busy(self, timeout_s: float) -> str | None:
        """Why a call given ``timeout_s`` would not finish in time (the queue is too long), or None. Callers
        check it before preparing a call, to answer without the LLM at once instead of at the deadline."""
        expected = self.expected_wait()
        if expected is not None and expected > timeout_s:
            return (
                f"the LLM is busy: {self._waiting} calls waiting for {self._max_concurrency} slots, "
                f"about {expected:.1f}s expected with {timeout_s:.1f}s left"
            )
        return None

    async def _queued(self, call: Callable[[float], Awaitable[R]], timeout_s: float, usage: Usage) -> R:
        """One deadline for the whole call: the wait for a concurrency slot, every attempt and the backoff
        between them. Under load a call is refused on time (LLMTimeout), or at once when the queue is
        already longer than the time it has (load shedding), instead of answering late."""
        shed = self.busy(timeout_s)
        if shed:
            raise LLMTimeout(shed)
        deadline = time.monotonic() + timeout_s
        self._waiting += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), timeout_s)
        except TimeoutError as exc:
            usage.queued_s = timeout_s
            raise LLMTimeout(
                f"no free slot for a call to {self.base_url} within {timeout_s:.1f}s "
                f"({self._max_concurrency} in flight)"
            ) from exc
        finally:
            self._waiting -= 1
        usage.queued_s = round(timeout_s - (deadline - time.monotonic()), 3)
        started = time.monotonic()
        self._running += 1
        try:
            result = await self._retrying(call, deadline, usage)
        finally:
            self._running -= 1
            self._semaphore.release()
        took = time.monotonic() - started
        self._call_s = took if self._call_s is None else 0.8 * self._call_s + 0.2 * took
        return result

    async def _retrying(self, call: Callable[[float], Awaitable[R]], deadline: float, usage: Usage) -> R:
        """Retry what may pass (connection errors, 5xx) with jittered backoff, within ``deadline``
        (``time.monotonic()``); each attempt gets what is left, and the SDK is told the same figure."""
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LLMTimeout(f"no reply from {self.base_url} before the deadline (after {attempt} attempts)")
            try:
                return await asyncio.wait_for(call(left), left)
            except (TimeoutError, openai.APITimeoutError) as exc:
                raise LLMTimeout(f"no reply from {self.base_url} within {left:.1f}s") from exc
            except openai.APIError as exc:
                error = _classify(exc, left)
                if not isinstance(error, LLMUnavailable) or attempt >= self.max_retries:
                    raise error from exc
            attempt += 1
            usage.retries += 1
            pause = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    async def _write_log(
        self,
        kind: str,
        messages: list[Message],
        params: dict[str, Any],
        text: str | None,
        usage: Usage,
        error: BaseException | None,
    ) -> None:
        if self._log is None:
            return
        subject = SUBJECT.get()
        await self._log.write(
            {
                "time": time.time(),
                "kind": kind,
                "model": self.model,
                "messages": messages,
                "params": {k: v for k, v in params.items() if k != "extra_body"} | params.get("extra_body", {}),
                "response": text,
                "usage": usage.as_dict(),
                "error": f"{type(error).__name__}: {error}" if error else None,
            },
            subject,
        )


def _reply_text(response: Any) -> str | None:
    """What the log records of a reply: its text, or its tool calls."""
    if response is None or not response.choices:
        return None
    message = response.choices[0].message
    if getattr(message, "tool_calls", None):
        return json.dumps([c.model_dump() for c in message.tool_calls])
    return message.content


def _classify(exc: openai.APIError, timeout_s: float) -> Exception:
    """Map the SDK's exceptions onto ours."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeout(f"no reply within {timeout_s:.1f}s")
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnavailable(f"cannot reach the LLM server: {exc}")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return LLMUnavailable(f"LLM server error {exc.status_code}: {exc.message}")
        return LLMRequestError(f"LLM server refused the request ({exc.status_code}): {exc.message}")
    return LLMUnavailable(str(exc))
