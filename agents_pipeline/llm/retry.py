"""What the OpenAI-compatible clients (chat and embeddings) share about failing and retrying."""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import openai


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


def backoff_delay(
    retry: int,
    retry_after: float | None,
    *,
    base: float,
    maximum: float,
    retry_after_max: float,
    rng: random.Random,
) -> float:
    """Seconds before retry number ``retry`` (0-based): Retry-After, else jittered backoff."""
    if retry_after is not None:
        return min(retry_after, retry_after_max)
    ceiling = min(maximum, base * 2**retry)
    # "Equal jitter": at least half the exponential step, so retries stay spread out.
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
