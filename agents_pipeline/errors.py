"""Errors raised by pipeline stages, and what a stage does with them.

    PipelineError                 base; ``retriable`` says whether trying again can help
    ├── UnsupportedPayload        a webhook shape we cannot read: dead-lettered, never retried
    ├── ProviderError             a provider's HTTP API refused or failed a call
    │                             (``code`` is the provider's own code; ``retry_after`` seconds)
    └── LLMError                  the LLM endpoint failed after its retries

Stages branch on ``exc.retriable`` and ``exc.code``, never on message text.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of stage errors."""

    retriable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UnsupportedPayload(PipelineError):
    """The webhook (or one item of it) has a shape no normalizer understands."""

    retriable = False


class ProviderError(PipelineError):
    """A provider's API answered with an error (or could not be reached)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        retriable: bool = False,
        retry_after: float | None = None,
        outside_window: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
        self.retriable = retriable
        self.retry_after = retry_after
        # True when the provider refused free text outside the 24-hour window.
        self.outside_window = outside_window


class LLMError(PipelineError):
    """The LLM endpoint failed after every retry."""

    retriable = True
