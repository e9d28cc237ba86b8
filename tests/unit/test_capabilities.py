"""Capability detection at connect: an endpoint that lacks what driftrec needs is refused with one clear
error naming the setting to change. A fake server drives these error paths (and only these)."""

from __future__ import annotations

import pytest

from driftrec.llm import LLMClient
from driftrec.llm.capabilities import MissingCapability, choice_param_for, detect
from tests.fake_openai import Behaviour, FakeOpenAI, completion, serve_fake

GOOD_JSON = completion('{"answer": "yes", "words": []}')
PLAIN = Behaviour(body=completion("OK"))
LOGPROBS = Behaviour(body=completion("A", logprobs=[("A", -0.1), ("B", -2.4)]))


def test_the_label_constraint_is_spelled_as_the_vllm_version_wants() -> None:
    assert choice_param_for("0.32.0") == "structured_outputs"
    assert choice_param_for("0.10.2") == "structured_outputs"
    assert choice_param_for("0.9.1") == "guided_choice"
    assert choice_param_for(None) is None  # not vLLM: no label constraint, plain top logprobs


async def test_a_server_without_structured_outputs_is_refused_at_connect() -> None:
    fake = FakeOpenAI().then(PLAIN, Behaviour(status=400, body={"error": {"message": "response_format not supported"}}))
    async with serve_fake(fake):
        client = LLMClient(fake.base_url, "fake", timeout_s=2.0, max_retries=0)
        with pytest.raises(MissingCapability, match=r"structured outputs.*DRIFTREC_LLM_BASE_URL"):
            await detect(client, need_logprobs=True)
        await client.aclose()


async def test_a_server_without_logprobs_names_the_ranking_setting() -> None:
    fake = FakeOpenAI().then(PLAIN, Behaviour(body=GOOD_JSON), Behaviour(body=completion("A")))  # no logprobs
    async with serve_fake(fake):
        client = LLMClient(fake.base_url, "fake", timeout_s=2.0, max_retries=0)
        with pytest.raises(MissingCapability, match="DRIFTREC_RANKING_MODE=listwise"):
            await detect(client, need_logprobs=True)
        assert client.choice_param is None  # no /version: not vLLM, so no vLLM-only parameters are sent
        assert "structured_outputs" not in fake.requests[-1] and "guided_choice" not in fake.requests[-1]
        fake.then(PLAIN, Behaviour(body=GOOD_JSON), Behaviour(body=completion("A")))
        found = await detect(client, need_logprobs=False)  # listwise ranking: fine without logprobs
        assert found.structured and not found.logprobs and found.server == "openai-compatible"
        await client.aclose()


async def test_a_smaller_top_logprobs_limit_bounds_the_verbalizer_window() -> None:
    """A server started with --max-logprobs 5 refuses 20 labels; driftrec settles on 5 and the verbalizer
    then plays a tournament of 5-label windows instead of losing labels outside the window."""
    refuse = Behaviour(status=400, body={"error": {"message": "top_logprobs must be <= 5"}})
    fake = FakeOpenAI().then(PLAIN, Behaviour(body=GOOD_JSON), refuse, LOGPROBS)
    async with serve_fake(fake):
        client = LLMClient(fake.base_url, "fake", timeout_s=2.0, max_retries=0)
        found = await detect(client, need_logprobs=True)
        assert found.max_logprobs == client.max_logprobs == 5
        assert [r["top_logprobs"] for r in fake.requests[2:]] == [20, 5]
        with pytest.raises(ValueError, match="exceed the server's top-logprobs limit"):
            await client.label_logprobs([{"role": "user", "content": "?"}], list("ABCDEF"))
        await client.aclose()


async def test_a_template_that_opens_a_reasoning_block_is_asked_not_to_think_and_read_past() -> None:
    """No model that runs here thinks aloud (SmolLM2 and Qwen2.5 do not); a Qwen3-style reply drives this."""
    thinking = Behaviour(body=completion("<think>\nThe user wants OK.", finish_reason="length"))
    fenced_json = Behaviour(body=completion('<think>sky is blue</think>\n{"answer": "yes", "words": []}'))
    fake = FakeOpenAI().then(thinking, fenced_json, LOGPROBS)
    async with serve_fake(fake):
        client = LLMClient(fake.base_url, "fake", timeout_s=2.0, max_retries=0, vllm_extensions=True)
        found = await detect(client, need_logprobs=True)
        assert found.reasoning and client.reasoning
        assert "chat_template_kwargs" not in fake.requests[0]  # not known yet at the first request
        assert all(r["chat_template_kwargs"] == {"enable_thinking": False} for r in fake.requests[1:])
        fake.then(Behaviour(body=completion("<think>short</think>Fargo, because you liked Blood Simple.")))
        reply = await client.chat([{"role": "user", "content": "why?"}])
        assert reply.text == "Fargo, because you liked Blood Simple." and reply.reasoning.startswith("<think>")
        await client.aclose()
