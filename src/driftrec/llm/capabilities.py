"""What a served endpoint can do, found out at connect time, so a missing feature is one clear error
naming the setting to change, not a stack trace in the middle of a request.

- the structured-output parameter: vLLM >= 0.10.2 spells label constraints ``structured_outputs``,
  older vLLM ``guided_choice``; other OpenAI-compatible servers have neither (JSON-schema
  ``response_format`` is still used for structured replies);
- structured outputs themselves (driftrec needs them for every decision the LLM makes): probed with
  one tiny schema-constrained request;
- label log-probabilities (the verbalizer ranker): probed likewise; without them the verbalizer is not
  usable and the error says to set ``DRIFTREC_RANKING_MODE=listwise`` (or ``off``);
- the top-logprobs limit (vLLM's ``--max-logprobs``, 20 by default): a verbalizer window never holds
  more labels than the server returns log-probabilities for; larger candidate sets play a tournament;
- a chat template that opens a reasoning block (``<think>``, Qwen3 / DeepSeek-R1 style): seen in a
  plain reply; vLLM is then asked not to think (``chat_template_kwargs.enable_thinking=false``), and
  any block that still comes is read past (``client.strip_reasoning``), also while streaming.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import ascii_uppercase
from typing import Literal

from pydantic import BaseModel, Field

from driftrec.llm.client import LLMClient
from driftrec.llm.errors import LLMError, LLMRequestError


class MissingCapability(LLMError):
    """The endpoint lacks something driftrec needs; the message names the setting to change."""


@dataclass(frozen=True)
class Capabilities:
    server: str  # "vllm 0.32.0" or "openai-compatible"
    choice_param: str | None
    structured: bool
    logprobs: bool
    reasoning: bool = False
    max_logprobs: int = 20


class _Probe(BaseModel):
    answer: Literal["yes", "no"]
    words: list[str] = Field(max_length=2)


def choice_param_for(version: str | None) -> str | None:
    """The label-constraint parameter this vLLM version understands (None: not vLLM)."""
    if version is None:
        return None
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    return "structured_outputs" if tuple(numbers[:3]) >= (0, 10, 2) else "guided_choice"


async def detect(client: LLMClient, *, need_logprobs: bool) -> Capabilities:
    """Probe ``client``'s server (a few tiny requests) and configure the client for what it speaks."""
    version = await client.server_version()
    client.choice_param = choice_param_for(version) if client.vllm_extensions else None
    server = f"vllm {version}" if version else "openai-compatible"
    # First a plain reply: a template that opens a reasoning block shows it here (then vLLM is asked
    # not to think for everything that follows, including the structured probe).
    plain = await client.chat([{"role": "user", "content": "Say OK."}], max_tokens=8, temperature=0.0)
    client.reasoning = bool(plain.reasoning)
    try:
        await client.structured(
            [{"role": "user", "content": "Is the sky blue? Answer as JSON."}], _Probe, max_tokens=32
        )
    except LLMRequestError as exc:
        raise MissingCapability(
            f"{client.base_url} ({server}) refused a structured-output request (response_format json_schema): "
            f"{exc}. driftrec needs structured outputs; serve the model with vLLM (>= 0.10) or another server "
            "that supports them (DRIFTREC_LLM_BASE_URL)"
        ) from exc
    logprobs = True
    try:
        client.max_logprobs = await _max_logprobs(client)
    except LLMError as exc:
        logprobs = False
        if need_logprobs:
            raise MissingCapability(
                f"{client.base_url} ({server}) returned no label log-probabilities ({exc}); the verbalizer "
                "ranker needs them: set DRIFTREC_RANKING_MODE=listwise (or off), or serve with vLLM"
            ) from exc
    return Capabilities(server, client.choice_param, True, logprobs, client.reasoning, client.max_logprobs)


async def _max_logprobs(client: LLMClient) -> int:
    """The largest label set the server scores in one pass: 20 labels, else 5, else 2 (then an error)."""
    question = [{"role": "user", "content": "Pick one letter."}]
    for size in (20, 5, 2):
        client.max_logprobs = size
        try:
            await client.label_logprobs(question, list(ascii_uppercase[:size]))
            return size
        except LLMRequestError:
            if size == 2:
                raise
    raise AssertionError("unreachable")
