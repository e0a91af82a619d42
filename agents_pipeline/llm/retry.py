"""What the OpenAI-compatible clients (chat and embeddings) share about failing and retrying."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import openai

logger = logging.getLogger(__name__)
T = TypeVar("T")


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after seconds or date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return max(value, 0.0) if math.isfinite(value) else None


def error_detail(exc: BaseException) -> str:
    """A short, single-line description of an error for logs and run records."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass(frozen=True)
class OpenAIFailure:
    """How one failed call is handled: its error code, and whether to try again."""

    code: str
    detail: str
    retriable: bool
    retry_after: float | None = None

    @classmethod
    def of(cls, exc: openai.OpenAIError, *, what: str) -> OpenAIFailure:
        """Classify an SDK error: 429/5xx/timeouts/connection errors are transient."""
        detail = error_detail(exc)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            transient = status == 429 or status >= 500
            retry_after = parse_retry_after(exc.response.headers) if transient else None
            return cls(f"http_{status}", detail, transient, retry_after)
        if isinstance(exc, openai.APITimeoutError):
            return cls("timeout", f"{what} request timed out", True)
        if isinstance(exc, openai.APIConnectionError):
            return cls("connection_error", detail, True)
        # A response we could not read (schema validation and the like): retrying won't help.
        return cls("invalid_response", detail, False)


class GaveUp(Exception):
    """A call that failed for good: rejected (not retriable) or out of retries."""

    def __init__(self, failure: OpenAIFailure, attempts: int) -> None:
        super().__init__(failure.detail)
        self.failure = failure
        self.attempts = attempts


@dataclass
class RetryPolicy:
    """How often, and how far apart, a transient failure is tried again (chat and embeddings
    alike: the SDK's own retries are off so that each one is counted and logged here)."""

    max_retries: int = 3
    base: float = 0.5
    maximum: float = 8.0
    retry_after_max: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.max_retries = max(self.max_retries, 0)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``retry`` (0-based): Retry-After, else jittered backoff."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        ceiling = min(self.maximum, self.base * 2**retry)
        # "Equal jitter": at least half the exponential step, so retries stay spread out.
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    async def run(self, what: str, request: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """``request()``'s result and the attempts it took; raises ``GaveUp`` when an SDK
        error is not transient or the retries ran out (anything else propagates)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await request(), attempt
            except openai.OpenAIError as exc:
                failure = OpenAIFailure.of(exc, what=what)
                if not failure.retriable or attempt > self.max_retries:
                    raise GaveUp(failure, attempt) from exc
                delay = self.delay(attempt - 1, failure.retry_after)
                logger.warning(
                    "%s call failed (%s), retry %d/%d in %.3fs",
                    what,
                    failure.code,
                    attempt,
                    self.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
