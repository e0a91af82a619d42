"""Retrying a batch on transient failures, so that a passing outage never skips an event.

Transient means the database or the broker is away or busy: trying again later can
help. A failure caused by the data itself — a value PostgreSQL refuses (``DataError``:
NUL in text, invalid JSON for ``jsonb``, a number out of range), a row larger than an
index allows (``ProgramLimitExceeded``, which psycopg files under ``OperationalError``),
a record too large for the broker, a value that cannot be encoded — fails the same way
every time: retried, it would stall its partition for good, so it never counts as
transient; the stage hands it to its one-record path and dead-letters that record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from pydantic_core import PydanticSerializationError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    KafkaError,
    OSError,
    TimeoutError,
)

# Failures the data causes, some of them subclasses of the above: never transient.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.errors.ProgramLimitExceeded,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    UnicodeError,
    PydanticSerializationError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same work again later can succeed (see the module's docstring)."""
    return isinstance(exc, TRANSIENT) and not isinstance(exc, DATA_ERRORS)


async def with_retry(
    stage: str,
    work: Callable[[], Awaitable[T]],
    *,
    first_delay: float = 0.2,
    max_delay: float = 10.0,
) -> T:
    """Run ``work`` until it succeeds, backing off on transient errors (database or broker
    away); anything else propagates (a bug or bad data must not be retried forever)."""
    delay = first_delay
    while True:
        try:
            return await work()
        except TRANSIENT as exc:
            if not is_transient(exc):
                raise
            log.warning("%s: transient failure, retrying in %.1fs: %s", stage, delay, exc)
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)
