"""The client's error paths, driven by a fake OpenAI-compatible server.

Every failure the real server can produce maps onto one typed error, retries are bounded, and the
client never hangs past its time-out.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from driftrec.llm import InvalidLLMOutput, LLMClient, LLMRequestError, LLMTimeout, LLMUnavailable
from tests.fake_openai import Behaviour, FakeOpenAI, completion, serve_fake

MESSAGES = [{"role": "user", "content": "hi"}]


class Verdict(BaseModel):
    label: Literal["yes", "no"]
    reasons: list[str] = Field(max_length=2)


def client_for(fake: FakeOpenAI, **kwargs) -> LLMClient:
    options = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01} | kwargs
    return LLMClient(fake.base_url, "fake", **options)


async def test_valid_structured_reply_is_parsed_and_counted() -> None:
    fake = FakeOpenAI().then(Behaviour(body=completion('{"label": "yes", "reasons": ["a"]}')))
    async with serve_fake(fake), client_for(fake) as client:
        result = await client.structured(MESSAGES, Verdict)
    assert result.value == Verdict(label="yes", reasons=["a"])
    sent = fake.requests[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["properties"]["label"]["enum"] == ["yes", "no"]
    assert client.usage.calls == 1 and client.usage.prompt_tokens == 11 and client.usage.completion_tokens == 7


async def test_malformed_json_raises_invalid_output_with_the_raw_text() -> None:
    fake = FakeOpenAI().then(Behaviour(body=completion('{"label": "yes", "reas')))
    async with serve_fake(fake), client_for(fake) as client:
        with pytest.raises(InvalidLLMOutput, match="not JSON") as caught:
            await client.structured(MESSAGES, Verdict)
    assert caught.value.raw == '{"label": "yes", "reas'


async def test_schema_violation_raises_invalid_output() -> None:
    fake = FakeOpenAI().then(Behaviour(body=completion('{"label": "maybe", "reasons": []}')))
    async with serve_fake(fake), client_for(fake) as client:
        with pytest.raises(InvalidLLMOutput, match="does not validate"):
            await client.structured(MESSAGES, Verdict)


async def test_truncated_output_raises_even_if_it_parses() -> None:
    fake = FakeOpenAI().then(Behaviour(body=completion('{"label": "no", "reasons": []}', finish_reason="length")))
    async with serve_fake(fake), client_for(fake) as client:
        with pytest.raises(InvalidLLMOutput, match="truncated") as caught:
            await client.structured(MESSAGES, Verdict, max_tokens=5)
    assert caught.value.finish_reason == "length"


async def test_5xx_is_retried_then_succeeds() -> None:
    fake = FakeOpenAI().then(Behaviour(status=500), Behaviour(status=503), Behaviour(body=completion("hello")))
    async with serve_fake(fake), client_for(fake) as client:
        result = await client.chat(MESSAGES)
    assert result.text == "hello"
    assert len(fake.requests) == 3
    assert client.usage.retries == 2 and client.usage.failures == 0


async def test_persistent_5xx_gives_up_after_the_retry_budget() -> None:
    fake = FakeOpenAI(default=Behaviour(status=500))
    async with serve_fake(fake), client_for(fake, max_retries=2) as client:
        with pytest.raises(LLMUnavailable, match="500"):
            await client.chat(MESSAGES)
    assert len(fake.requests) == 3  # the first try and two retries, no more
    assert client.usage.failures == 1


async def test_4xx_is_not_retried() -> None:
    fake = FakeOpenAI(default=Behaviour(status=400, body={"error": {"message": "prompt too long"}}))
    async with serve_fake(fake), client_for(fake) as client:
        with pytest.raises(LLMRequestError, match="400"):
            await client.chat(MESSAGES)
    assert len(fake.requests) == 1


async def test_a_hung_server_times_out_on_time() -> None:
    fake = FakeOpenAI(default=Behaviour(body=completion("late"), delay_s=30))
    async with serve_fake(fake), client_for(fake, timeout_s=0.5) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(LLMTimeout):
            await client.chat(MESSAGES)
        assert asyncio.get_running_loop().time() - started < 5


async def test_the_deadline_includes_the_wait_for_a_slot() -> None:
    """Under load a call is refused on time, not answered late: with one slot and a 0.8 s server, a
    second call given 1 s waits 0.8 s for the slot and then has 0.2 s left (before: 1.6 s, a success)."""
    fake = FakeOpenAI(default=Behaviour(body=completion("ok"), delay_s=0.8))
    async with serve_fake(fake), client_for(fake, max_concurrency=1) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first, second = await asyncio.gather(
            client.chat(MESSAGES, timeout_s=1.0), client.chat(MESSAGES, timeout_s=1.0), return_exceptions=True
        )
        elapsed = loop.time() - started
    assert not isinstance(first, BaseException) and first.text == "ok"
    assert isinstance(second, LLMTimeout)
    assert elapsed < 1.4
    assert client.usage.queued_s > 0.5  # the second call's wait is accounted


async def test_a_full_queue_names_the_slots_and_the_time_given() -> None:
    fake = FakeOpenAI(default=Behaviour(body=completion("ok"), delay_s=2))
    async with serve_fake(fake), client_for(fake, max_concurrency=1) as client:
        results = await asyncio.gather(
            client.chat(MESSAGES, timeout_s=3), client.chat(MESSAGES, timeout_s=0.3), return_exceptions=True
        )
    assert isinstance(results[1], LLMTimeout)
    assert "no free slot" in str(results[1]) and "0.3s" in str(results[1]) and "1 in flight" in str(results[1])


async def test_the_timeout_message_names_the_time_the_call_had() -> None:
    """The client's default is 60 s; this call was given 0.4 s, and the message says so."""
    fake = FakeOpenAI(default=Behaviour(body=completion("late"), delay_s=30))
    async with serve_fake(fake), client_for(fake, timeout_s=60) as client:
        with pytest.raises(LLMTimeout, match=r"within 0\.4s"):
            await client.chat(MESSAGES, timeout_s=0.4)


async def test_a_queue_longer_than_the_time_left_is_refused_at_once() -> None:
    """Load shedding: once a call has been timed (0.5 s here, one slot), a call that would have to wait
    behind two others for 1.2 s is refused at once, saying why, instead of at its deadline."""
    fake = FakeOpenAI(default=Behaviour(body=completion("ok"), delay_s=0.5))
    async with serve_fake(fake), client_for(fake, max_concurrency=1) as client:
        await client.chat(MESSAGES)
        loop = asyncio.get_running_loop()

        async def timed() -> tuple[float, BaseException | None]:
            started = loop.time()
            try:
                await client.chat(MESSAGES, timeout_s=1.2)
                return loop.time() - started, None
            except LLMTimeout as exc:
                return loop.time() - started, exc

        results = await asyncio.gather(*(timed() for _ in range(5)))
    shed = [(t, e) for t, e in results if e is not None and "busy" in str(e)]
    served = [t for t, e in results if e is None]
    assert len(served) == 2 and len(shed) == 3
    assert all(t < 0.1 for t, _ in shed)
    assert "calls waiting for 1 slots" in str(shed[0][1])


async def test_unreachable_server_is_unavailable() -> None:
    client = LLMClient("http://127.0.0.1:9/v1", "fake", timeout_s=2, max_retries=1, backoff_s=0.01)
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        await client.chat(MESSAGES)
    assert client.usage.retries == 1
    await client.aclose()


async def test_concurrency_limit_is_respected() -> None:
    fake = FakeOpenAI(default=Behaviour(body=completion("ok"), delay_s=0.2))
    async with serve_fake(fake), client_for(fake, max_concurrency=3) as client:
        await asyncio.gather(*(client.chat(MESSAGES) for _ in range(9)))
    assert fake.peak_in_flight == 3
    assert client.usage.calls == 9


async def test_label_logprobs_reads_every_label_and_marks_missing_ones() -> None:
    fake = FakeOpenAI().then(Behaviour(body=completion("B", logprobs=[("B", -0.1), ("A", -2.5), ("x", -3.0)])))
    async with serve_fake(fake), client_for(fake) as client:
        scores = await client.label_logprobs(MESSAGES, ["A", "B", "C"])
    assert scores.ranked()[:2] == ["B", "A"]
    assert scores.missing == ["C"]
    assert fake.requests[0]["structured_outputs"] == {"choice": ["A", "B", "C"]}
    assert fake.requests[0]["max_tokens"] == 1


async def test_label_logprobs_without_logprobs_is_invalid_output() -> None:
    fake = FakeOpenAI().then(Behaviour(body=completion("A", logprobs=[])))
    async with serve_fake(fake), client_for(fake) as client:
        with pytest.raises(InvalidLLMOutput, match="no logprobs"):
            await client.label_logprobs(MESSAGES, ["A", "B"])


async def test_every_call_is_logged_when_asked(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    fake = FakeOpenAI().then(Behaviour(body=completion("first")), Behaviour(status=400))
    async with serve_fake(fake), client_for(fake, log_path=log) as client:
        await client.chat(MESSAGES)
        with pytest.raises(LLMRequestError):
            await client.chat([{"role": "user", "content": "second"}])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["response"] for r in records] == ["first", None]
    assert records[0]["messages"] == MESSAGES
    assert records[1]["error"].startswith("LLMRequestError")


async def test_the_response_cache_answers_a_repeated_call_without_the_server(tmp_path: Path) -> None:
    fake = FakeOpenAI(default=Behaviour(body=completion('{"label": "yes", "reasons": []}')))
    async with serve_fake(fake):
        async with client_for(fake, cache_path=tmp_path / "cache.db") as client:
            first = await client.structured(MESSAGES, Verdict)
            second = await client.structured(MESSAGES, Verdict)
            other = await client.structured([{"role": "user", "content": "another prompt"}], Verdict)
        async with client_for(fake, cache_path=tmp_path / "cache.db") as reopened:  # survives the process
            third = await reopened.structured(MESSAGES, Verdict)
    assert first.value == second.value == third.value == other.value
    assert len(fake.requests) == 2  # MESSAGES once, "another prompt" once
    assert client.cache is not None and (client.cache.hits, client.cache.misses) == (1, 2)
    assert second.usage.cached == 1 and first.usage.cached == 0


async def test_a_cached_reply_is_reused_only_at_the_same_precision(tmp_path: Path) -> None:
    """A bfloat16 server answers differently from a float32 one: the cache keeps their replies apart."""
    fake = FakeOpenAI(default=Behaviour(body=completion('{"label": "yes", "reasons": []}')))
    cache = tmp_path / "cache.db"
    async with serve_fake(fake):
        for precision in ("float32", "bfloat16", "float32", "bfloat16", None):
            async with client_for(fake, cache_path=cache, precision=precision) as client:
                await client.structured(MESSAGES, Verdict)
    assert len(fake.requests) == 3  # float32 once, bfloat16 once, unknown precision once
