"""Chat completions over any OpenAI-compatible endpoint, with our own bounded retries.

The SDK's retries are off (``max_retries=0``) so that every retry, its backoff and its
Retry-After handling happen in ``retry.RetryPolicy`` (shared with the embeddings client),
visible and testable: 429, 5xx, timeouts and connection errors are retried; other 4xx
fail at once; exhaustion raises LLMError.
"""

from __future__ import annotations

import random
import time
from types import TracebackType

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from agents_pipeline.errors import LLMError
from agents_pipeline.llm.retry import GaveUp, RetryPolicy
from agents_pipeline.llm.retry import parse_retry_after as parse_retry_after
from agents_pipeline.llm.tokens import count_message_tokens, count_tokens

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 3
# Local OpenAI-compatible servers (Ollama, vLLM) ignore the key, but the SDK wants one.
NO_KEY_PLACEHOLDER = "no-key"


class Completion(BaseModel):
    """One chat completion: the text, what it cost in tokens, and how long it took."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_ms: int
    finish_reason: str | None
    attempts: int = 1


class LLMClient:
    """One per process: an AsyncOpenAI connection pool plus retry policy."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        retry_after_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or NO_KEY_PLACEHOLDER,
            timeout=timeout,
            max_retries=0,
        )
        self.retry = RetryPolicy(
            max_retries, backoff_base, backoff_max, retry_after_max, rng or random.Random()
        )

    async def __aenter__(self) -> LLMClient:
        """Use as ``async with LLMClient(...) as llm`` so the pool is always closed."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection pool on the way out."""
        await self.close()

    async def close(self) -> None:
        """Release the HTTP connection pool (open sockets would leak otherwise)."""
        await self._client.close()

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
    ) -> Completion:
        """One chat completion, retried on transient failures; raises LLMError when it gives up."""
        started = time.perf_counter()
        try:
            response, attempts = await self.retry.run(
                "LLM",
                lambda: self._client.chat.completions.create(
                    model=model,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=temperature,
                    max_tokens=max_tokens,
                ),
            )
        except GaveUp as gave_up:
            failure = gave_up.failure
            if not failure.retriable:
                error = LLMError(f"LLM request rejected: {failure.detail}", code=failure.code)
                error.retriable = False
                raise error from gave_up.__cause__
            raise LLMError(
                f"LLM call failed after {gave_up.attempts} attempts: {failure.detail}",
                code=failure.code,
            ) from gave_up.__cause__
        return self._completion(response, model, messages, started, attempts)

    @staticmethod
    def _completion(
        response: ChatCompletion,
        model: str,
        messages: list[dict[str, str]],
        started: float,
        attempts: int,
    ) -> Completion:
        """Our Completion from the SDK's response; usage falls back to our own token count."""
        if not response.choices:
            error = LLMError("LLM response has no choices", code="invalid_response")
            error.retriable = False
            raise error
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = response.usage
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if prompt_tokens is None:
            prompt_tokens = count_message_tokens(messages)
        if completion_tokens is None:
            completion_tokens = count_tokens(text)
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=response.model or model,
            latency_ms=round((time.perf_counter() - started) * 1000),
            finish_reason=choice.finish_reason,
            attempts=attempts,
        )
