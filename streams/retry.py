"""Retrying a batch on transient failures, so that a passing outage never skips an event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    KafkaError,
    OSError,
    TimeoutError,
)


async def with_retry(
    stage: str,
    work: Callable[[], Awaitable[T]],
    *,
    first_delay: float = 0.2,
    max_delay: float = 10.0,
) -> T:
    """Run ``work`` until it succeeds, backing off on transient errors (database or broker
    away); anything else propagates (a bug must not be retried forever)."""
    delay = first_delay
    while True:
        try:
            return await work()
        except TRANSIENT as exc:
            log.warning("%s: transient failure, retrying in %.1fs: %s", stage, delay, exc)
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)
