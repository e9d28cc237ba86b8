"""Capability detection at connect: an endpoint that lacks what driftrec needs is refused with one clear
error naming the setting to change. A fake server drives these error paths (and only these)."""

from __future__ import annotations

import pytest

from driftrec.llm import LLMClient
from driftrec.llm.capabilities import MissingCapability, choice_param_for, detect
from tests.fake_openai import Behaviour, FakeOpenAI, completion, serve_fake

GOOD_JSON = completion('{"answer": "yes", "words": []}')


def test_the_label_constraint_is_spelled_as_the_vllm_version_wants() -> None:
    assert choice_param_for("0.32.0") == "structured_outputs"
    assert choice_param_for("0.10.2") == "structured_outputs"
    assert choice_param_for("0.9.1") == "guided_choice"
    assert choice_param_for(None) is None  # not vLLM: no label constraint, plain top logprobs


async def test_a_server_without_structured_outputs_is_refused_at_connect() -> None:
    fake = FakeOpenAI().then(Behaviour(status=400, body={"error": {"message": "response_format not supported"}}))
    async with serve_fake(fake):
        client = LLMClient(fake.base_url, "fake", timeout_s=2.0, max_retries=0)
        with pytest.raises(MissingCapability, match=r"structured outputs.*DRIFTREC_LLM_BASE_URL"):
            await detect(client, need_logprobs=True)
        await client.aclose()


async def test_a_server_without_logprobs_names_the_ranking_setting() -> None:
    fake = FakeOpenAI().then(Behaviour(body=GOOD_JSON), Behaviour(body=completion("A")))  # no logprobs in reply
    async with serve_fake(fake):
        client = LLMClient(fake.base_url, "fake", timeout_s=2.0, max_retries=0)
        with pytest.raises(MissingCapability, match="DRIFTREC_RANKING_MODE=listwise"):
            await detect(client, need_logprobs=True)
        assert client.choice_param is None  # no /version: not vLLM, so no vLLM-only parameters are sent
        assert "structured_outputs" not in fake.requests[-1] and "guided_choice" not in fake.requests[-1]
        fake.then(Behaviour(body=GOOD_JSON), Behaviour(body=completion("A")))
        found = await detect(client, need_logprobs=False)  # listwise ranking: fine without logprobs
        assert found.structured and not found.logprobs and found.server == "openai-compatible"
        await client.aclose()
