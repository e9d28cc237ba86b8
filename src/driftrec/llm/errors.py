"""Typed LLM errors, so callers can degrade on exactly the failures they expect."""

from __future__ import annotations


class LLMError(RuntimeError):
    """Base class of everything the LLM layer raises."""


class LLMUnavailable(LLMError):
    """The server could not be reached, or kept failing with 5xx after the retries."""


class LLMTimeout(LLMError):
    """The call took longer than its time-out."""


class LLMRequestError(LLMError):
    """The server refused the request (4xx): too long a prompt, an unknown model, a bad schema."""


class InvalidLLMOutput(LLMError):
    """The reply was truncated, not JSON, or did not validate against the schema."""

    def __init__(self, message: str, *, raw: str | None = None, finish_reason: str | None = None):
        super().__init__(message)
        self.raw = raw
        self.finish_reason = finish_reason


class RuntimeStartError(LLMError):
    """The embedded vLLM server did not come up; the message points at its log."""
