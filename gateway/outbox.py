"""Where the gateway puts what it accepts, one ``Outbox`` for every producing handler.

- ``send(topic, key=, value=, headers=)``: a webhook; returns once the record is durable,
  raises ``NotDurable`` (the caller answers 503 + Retry-After) when it cannot be;
- ``stage(conn, topic, ...)`` inside the transaction of the change the record announces (a
  human reply's row, a document's row, a conversation closed), then ``publish(staged)`` after
  the commit;
- ``settle`` and ``carry`` for a stopping gateway (gateway/intake.py).

``DirectOutbox`` (the journal off: Redpanda, Kafka) produces with ``acks=all`` and waits for
the ack. ``gateway.journal.Journal`` (the journal on: the embedded Tansu) makes the record
durable in PostgreSQL first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from gateway.producer import DurableProducer
from omnichat.settings import Settings
from storage.journal import Headers, Record
from streams.progress import Progress

log = logging.getLogger(__name__)

Key = tuple[UUID, int]  # a journal record: (lane, seq)


@dataclass(frozen=True)
class Staged:
    """A record written in the caller's transaction, to publish once it has committed."""

    record: Record
    key: Key | None = None  # its journal row; None when the journal is off


@dataclass(frozen=True)
class Drained:
    """What a drain did: whether the pipeline carried everything, and how much."""

    complete: bool
    handled: int  # records the pipeline handled during the drain (a lower bound)
    left: int  # records it had not handled when the drain gave up
    seconds: float


class DirectOutbox:
    """The journal off: produce with ``acks=all`` and wait for the ack (durable brokers)."""

    journal_on = False

    def __init__(self, settings: Settings, producer: DurableProducer) -> None:
        self.settings = settings
        self.producer = producer
        self._sending = 0  # produces in flight, for the drain

    async def start(self) -> None:
        """Nothing to start: the producer is the app's."""

    async def stop(self) -> None:
        """Nothing to stop."""

    def status(self) -> str | None:
        """No journal: nothing to report in readiness."""
        return None

    async def send(self, topic: str, *, key: bytes | None, value: bytes, headers: Headers) -> float:
        """Produce and wait for the broker's ack; raises BrokerUnavailable."""
        self._sending += 1
        try:
            return await self.producer.send(topic, key=key, value=value, headers=list(headers))
        finally:
            self._sending -= 1

    async def stage(
        self, conn: Any, topic: str, *, key: bytes | None, value: bytes, headers: Headers = ()
    ) -> Staged:
        """Nothing to write: the record is produced by ``publish``."""
        return Staged(Record(topic, key, value, tuple(headers)))

    async def publish(self, staged: Staged) -> float:
        """Produce a staged record after its transaction committed; raises BrokerUnavailable."""
        r = staged.record
        return await self.send(r.topic, key=r.key, value=r.value, headers=r.headers)

    async def settle(self, timeout: float) -> bool:
        """Wait until no produce is in flight."""
        deadline = time.monotonic() + timeout
        while self._sending:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def carry(self, timeout: float) -> Drained:
        """Wait until the pipeline has carried everything on the broker (a wave)."""
        progress = Progress(broker_url(self.settings), self.settings.worker_id)
        try:
            return await wave_within(progress, timeout)
        finally:
            await progress.stop()


async def wave_within(progress: Progress, timeout: float) -> Drained:
    """One wave within ``timeout``; when it does not complete, how many records are left."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            handled = await progress.wave()
    except Exception as exc:  # the time is up, or the broker is away: nothing more to wait for
        if not isinstance(exc, TimeoutError):
            log.warning("drain: the broker did not answer: %r", exc)
        left = -1
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                left = await progress.lag()
        return Drained(False, 0, left, time.monotonic() - started)
    return Drained(True, handled, 0, time.monotonic() - started)


def broker_url(settings: Settings) -> str:
    assert settings.broker_url, "the gateway needs broker_url"
    return settings.broker_url
