"""Against the real embedded vLLM serving SmolLM2-135M-Instruct on this CPU.

These are the claims the foundation makes: constrained structured output validates every time, label
log-probabilities come back in one pass, concurrent requests all complete, the offline token count is
the server's own count, and stopping the server leaves no process behind.
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from driftrec.config import Settings
from driftrec.llm import LLM, open_llm
from driftrec.llm.runtime import server_dtype, session_pids
from driftrec.models import Item
from driftrec.prompts import render

pytestmark = pytest.mark.vllm

GENRES = ["action", "comedy", "drama", "horror", "romance", "sci-fi", "thriller", "animation"]
TITLES = [
    "Toy Story (1995)",
    "Heat (1995)",
    "Alien (1979)",
    "Fargo (1996)",
    "Casablanca (1942)",
    "Scream (1996)",
    "Titanic (1997)",
    "Aladdin (1992)",
    "Die Hard (1988)",
    "Babe (1995)",
]


class MovieCard(BaseModel):
    genre: Literal["action", "comedy", "drama", "horror", "romance", "sci-fi", "thriller", "animation"]
    rating: int = Field(ge=1, le=5)
    tags: list[str] = Field(max_length=3)


async def test_twenty_structured_outputs_all_validate(llm: LLM) -> None:
    async def card(title: str, i: int) -> MovieCard:
        messages = [{"role": "user", "content": f"Describe the movie {title} (variant {i}) as JSON."}]
        return (await llm.client.structured(messages, MovieCard, max_tokens=80)).value

    cards = await asyncio.gather(*(card(TITLES[i % len(TITLES)], i) for i in range(20)))
    assert len(cards) == 20
    assert all(isinstance(c, MovieCard) and c.genre in GENRES and len(c.tags) <= 3 for c in cards)


async def test_label_logprobs_score_every_candidate_label_in_one_pass(llm: LLM) -> None:
    labels = [chr(ord("A") + i) for i in range(10)]
    listing = "\n".join(f"{label}) {title}" for label, title in zip(labels, TITLES, strict=True))
    messages = [{"role": "user", "content": f"Which movie is best for a child?\n{listing}\nAnswer with the letter."}]
    scores = await llm.client.label_logprobs(messages, labels)
    assert set(scores.logprobs) == set(labels)
    assert scores.missing == []
    assert all(math.isfinite(v) and v <= 0 for v in scores.logprobs.values())
    # constrained to the labels, the probabilities are a distribution over exactly those labels
    assert sum(math.exp(v) for v in scores.logprobs.values()) == pytest.approx(1.0, abs=0.02)
    assert scores.chosen in labels
    assert scores.usage.completion_tokens == 1


async def test_eight_concurrent_requests_complete(llm: LLM) -> None:
    messages = [[{"role": "user", "content": f"Name one movie like {t}."}] for t in TITLES[:8]]
    results = await asyncio.gather(*(llm.client.chat(m, max_tokens=24) for m in messages))
    assert len(results) == 8
    assert all(r.text.strip() and r.usage.completion_tokens > 0 for r in results)


async def test_offline_token_count_equals_the_servers_count(llm: LLM) -> None:
    for text in ["Hello", "Movies from 1995 and 2001, please: Toy Story, Heat; not Scream!", "東京物語 🎬"]:
        messages = [{"role": "system", "content": "You recommend movies."}, {"role": "user", "content": text}]
        result = await llm.client.chat(messages, max_tokens=1)
        assert result.usage.prompt_tokens == llm.tokens.count_messages(messages)


class ItemFacets(BaseModel):
    """The item_facets template's answer (a catalog-tagging prompt)."""

    mood: Literal["thrilling", "funny", "moving", "dark", "light", "thoughtful", "romantic", "scary"]
    audience: Literal["kids", "family", "teens", "adults"]
    one_line: str = Field(max_length=100)


async def test_rendered_prompt_fits_its_budget_and_round_trips(llm: LLM) -> None:
    toy_story = Item(id="1", title="Toy Story (1995)", genres=("Animation", "Children's", "Comedy"))
    prompt = render("item_facets", {"item": toy_story}, counter=llm.tokens, budget=llm.context_window)
    result = await llm.client.structured(prompt.messages, ItemFacets, max_tokens=96)
    assert result.usage.prompt_tokens == prompt.tokens
    assert isinstance(result.value, ItemFacets)


async def test_server_is_gone_after_shutdown(settings: Settings) -> None:
    second = await open_llm(settings, warm=False)
    assert second.server is not None
    sid = second.server.pid
    assert sid is not None and session_pids(sid)
    reply = await second.client.chat([{"role": "user", "content": "Say hi."}], max_tokens=4)
    assert reply.usage.completion_tokens > 0
    await second.aclose()
    assert session_pids(sid) == []


async def test_the_server_computes_in_the_precision_this_cpu_is_fastest_at(llm: LLM) -> None:
    """bfloat16 on a CPU with bf16 instructions, float32 elsewhere: vLLM's own log says which it loaded."""
    assert llm.server is not None
    assert llm.server.dtype == server_dtype("native") in ("bfloat16", "float32")
    started = llm.server.log_path.read_text().rsplit("=== driftrec starting:", 1)[1]
    assert f"--dtype {llm.server.dtype}" in started.splitlines()[0]
    assert f"dtype=torch.{llm.server.dtype}" in started
    assert llm.client.precision == llm.server.dtype  # and the response cache keys replies by it
