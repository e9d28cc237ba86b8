"""``connect(settings)``: the one way the rest of driftrec gets an LLM.

With no endpoint configured it prepares the packaged model, starts the embedded vLLM, warms it up
(one structured request and one logprobs request: the first of each compiles grammars and samplers,
which otherwise lands on a user's first call), and stops it on exit. With an endpoint configured it
only connects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from driftrec.config import Settings
from driftrec.llm.capabilities import detect
from driftrec.llm.checkpoint import aprepare_model
from driftrec.llm.client import LLMClient
from driftrec.llm.errors import LLMError
from driftrec.llm.registry import embedded_model
from driftrec.llm.runtime import VLLMServer
from driftrec.llm.tokens import TokenCounter, byte_encoding, encoding_from_tokenizer_json

DEFAULT_CONTEXT_WINDOW = 4096
ESTIMATE_MARGIN = 1.25  # counts with a vocabulary that is not the served model's are inflated by this


@dataclass
class LLM:
    """A connected LLM: the client, a token counter for its vocabulary, its context window."""

    client: LLMClient
    tokens: TokenCounter
    context_window: int
    server: VLLMServer | None = None

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.server is not None:
            await self.server.stop()


async def warm_up(client: LLMClient) -> None:
    """The capability probe (one structured and one label-logprob request) doubles as the warm-up."""
    await detect(client, need_logprobs=True)


async def _context_window(client: LLMClient, settings: Settings) -> int:
    if settings.llm.context_window:
        return settings.llm.context_window
    with contextlib.suppress(LLMError):
        for model in await client.list_models():
            if model.get("id") == client.model and model.get("max_model_len"):
                return int(model["max_model_len"])
    return DEFAULT_CONTEXT_WINDOW


def served_name(settings: Settings) -> str:
    """The name the embedded server serves the model under."""
    return settings.model_served_name or (
        settings.model_gguf_path.stem.lower()
        if settings.model_gguf_path
        else embedded_model(settings.model).served_name
    )


def _client(settings: Settings, base_url: str, model: str, precision: str | None = None) -> LLMClient:
    return LLMClient(
        base_url,
        model,
        api_key=settings.llm.api_key.get_secret_value(),
        timeout_s=settings.llm.timeout_s,
        max_retries=settings.llm.max_retries,
        backoff_s=settings.llm.backoff_s,
        max_concurrency=settings.llm.max_concurrency,
        temperature=settings.llm.temperature,
        seed=settings.llm.seed,
        log_path=settings.llm.log_path,
        cache_path=settings.llm.cache_path,
        precision=precision,
    )


async def open_llm(settings: Settings, *, warm: bool = True) -> LLM:
    """Connect (starting the embedded server if needed); the caller must ``await llm.aclose()``."""
    if settings.embedded:
        prepared = await aprepare_model(settings)
        server = VLLMServer(
            prepared.checkpoint_dir,
            served_name=served_name(settings),
            tool_parser=None if settings.model_gguf_path else embedded_model(settings.model).tool_parser,
            log_path=settings.cache_dir / "logs" / f"vllm-{served_name(settings)}.log",
            port=settings.vllm.port,
            dtype=settings.vllm.dtype,
            max_model_len=settings.vllm.max_model_len,
            kvcache_gb=settings.vllm.kvcache_gb,
            extra_args=settings.vllm.extra_args,
            python=str(settings.vllm.python) if settings.vllm.python else None,
            startup_timeout_s=settings.vllm.startup_timeout_s,
        )
        await server.start()
        client = _client(settings, server.base_url, served_name(settings), server.dtype)
        try:
            if warm:
                await warm_up(client)
            tokens = await asyncio.to_thread(prepared.token_counter)
        except BaseException:
            await client.aclose()
            await server.stop()
            raise
        window = settings.llm.context_window or settings.vllm.max_model_len
        return LLM(client, tokens, window, server)

    assert settings.llm.base_url is not None
    model = settings.llm.model
    probe = _client(settings, settings.llm.base_url, model or "?")
    if model is None:
        models = await probe.list_models()
        if not models:
            raise LLMError(f"{settings.llm.base_url} serves no model; set DRIFTREC_LLM_MODEL")
        model = str(models[0]["id"])
        probe.model = model
    await detect(probe, need_logprobs=settings.ranking.mode == "verbalizer")
    return LLM(probe, await remote_token_counter(settings, probe), await _context_window(probe, settings))


# Text like driftrec's prompts (titles, genres, JSON, instructions) to measure a remote tokenizer on.
CALIBRATION_TEXT = (
    "You re-rank movie candidates for a user. Long-term interests: Drama (weight 0.80), Sci-Fi (0.40). "
    'Candidates: A. Star Wars (1977). Genres: Action, Adventure, Sci-Fi. B. Amélie (2001). {"label": "A"} '
    "Answer only with the JSON object. 1,234 ratings; user_42 liked Fargo, Toy Story and 東京物語."
)


async def remote_token_counter(settings: Settings, client: LLMClient) -> TokenCounter:
    """Token counts for a model served elsewhere, without downloading any model.

    Exact with the model's tokenizer.json (DRIFTREC_LLM_TOKENIZER_PATH). Otherwise an estimate: bytes
    scaled by the server's own tokens-per-byte on driftrec-like text (vLLM's /tokenize), plus a margin;
    a server without /tokenize gets one token per byte, an upper bound for byte-level BPE models."""
    if settings.llm.tokenizer_path:
        return await asyncio.to_thread(
            lambda: TokenCounter(encoding_from_tokenizer_json(settings.llm.tokenizer_path))  # type: ignore[arg-type]
        )
    measured = await client.tokenize(CALIBRATION_TEXT)
    per_byte = measured / len(CALIBRATION_TEXT.encode()) * ESTIMATE_MARGIN if measured else 1.0
    return TokenCounter(byte_encoding(), margin=min(per_byte, 1.0))


@contextlib.asynccontextmanager
async def connect(settings: Settings, *, warm: bool = True) -> AsyncIterator[LLM]:
    llm = await open_llm(settings, warm=warm)
    try:
        yield llm
    finally:
        await llm.aclose()
