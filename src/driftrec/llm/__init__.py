"""Talking to an OpenAI-compatible LLM server (vLLM), and running the embedded one."""

from driftrec.llm.client import ChatResult, LabelScores, LLMClient, StructuredResult, ToolCall, Usage
from driftrec.llm.connection import LLM, connect, open_llm
from driftrec.llm.errors import (
    InvalidLLMOutput,
    LLMError,
    LLMRequestError,
    LLMTimeout,
    LLMUnavailable,
    RuntimeStartError,
)
from driftrec.llm.tokens import TokenCounter

__all__ = [
    "LLM",
    "ChatResult",
    "InvalidLLMOutput",
    "LLMClient",
    "LLMError",
    "LLMRequestError",
    "LLMTimeout",
    "LLMUnavailable",
    "LabelScores",
    "RuntimeStartError",
    "StructuredResult",
    "TokenCounter",
    "ToolCall",
    "Usage",
    "connect",
    "open_llm",
]
