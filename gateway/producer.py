"""The gateway's durable producer: a webhook is acknowledged only after the broker's ack.

``acks="all"`` without idempotence (Tansu has no InitProducerId; duplicates are
removed downstream by our own keys). ``linger_ms=0``: every request waits for
its own produce, and aiokafka batches whatever accumulates while one request
is in flight, so concurrency gives batching for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from streams.topics import bootstrap_servers, ensure_topics

log = logging.getLogger(__name__)


class CachedPartitioner:
    """aiokafka's default partitioner (murmur2 of the key), with the hash cached per key.

    murmur2 is pure Python (~5 µs); webhooks.raw keys are channel ids, a small set.
    """

    def __init__(self) -> None:
        self._default = DefaultPartitioner()
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        """The partition for a key (a random available one without a key)."""
        if key is None:
            return self._default(key, all_partitions, available)
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) > 100_000:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


class BrokerUnavailable(Exception):
    """The record could not be made durable in time."""


class DurableProducer:
    """Owns one AIOKafkaProducer; reconnects in the background when the broker is away."""

    def __init__(self, broker_url: str, *, timeout: float, partitions: int = 4) -> None:
        self._broker_url = broker_url
        self._partitions = partitions
        self._servers = bootstrap_servers(broker_url)
        self.timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task | None = None
        self._stopping = False
        self._suspect = False  # a send failed: verify topics before the next one
        self._verify_lock = asyncio.Lock()

    def _new(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._servers,
            acks="all",
            enable_idempotence=False,
            linger_ms=0,
            request_timeout_ms=max(1000, int(self.timeout * 1000)),
            max_request_size=4 * 1024 * 1024,
            # A request that finds its partition's batch full waits for that batch's ack
            # (aiokafka); 16 KiB held ~18 webhooks, so a burst on one channel queued behind
            # itself. 512 KiB holds every request in flight on a busy channel and stays under
            # the brokers' default batch limit (1 MiB on Kafka and Redpanda).
            max_batch_size=512 * 1024,
            retry_backoff_ms=100,
            partitioner=CachedPartitioner(),
        )

    async def start(self) -> None:
        """Connect now if the broker is there, else keep trying in the background."""
        if not await self._try_connect():
            self._connect_task = asyncio.create_task(self._reconnect_loop())

    async def _try_connect(self) -> bool:
        producer = self._new()
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("broker not reachable yet: %s", exc)
            with contextlib.suppress(Exception):
                await producer.stop()
            return False
        self._producer = producer
        return True

    async def _reconnect_loop(self) -> None:
        while not self._stopping and self._producer is None:
            await asyncio.sleep(1.0)
            await self._try_connect()

    @property
    def connected(self) -> bool:
        """Whether a producer is started."""
        return self._producer is not None

    async def send(
        self,
        topic: str,
        *,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        partition: int | None = None,
    ) -> float:
        """Produce and wait for the ack; returns seconds taken, or raises BrokerUnavailable.
        ``partition``: this one instead of the key's (a dead letter's replay to generate)."""
        if self._producer is None:
            raise BrokerUnavailable("not connected to the broker")
        started = time.perf_counter()
        if self._suspect:
            await self._verify_topics()
        try:
            async with asyncio.timeout(self.timeout):  # one timer for the send and the ack
                fut = await self._producer.send(
                    topic, value=value, key=key, headers=headers, partition=partition
                )
                await fut
        except (KafkaError, TimeoutError, OSError) as exc:
            self._suspect = True
            raise BrokerUnavailable(f"broker did not acknowledge: {type(exc).__name__}") from exc
        return time.perf_counter() - started

    async def _verify_topics(self) -> None:
        """After a failure, check the topics exist before trusting an ack again.

        A restarted broker may have lost them (Tansu's memory storage does), and
        Tansu then acknowledges a produce to the missing topic without storing it.
        """
        async with self._verify_lock:
            if not self._suspect:
                return
            try:
                await ensure_topics(self._broker_url, self._partitions, timeout=self.timeout)
            except Exception as exc:
                raise BrokerUnavailable(f"broker topics not verified: {exc}") from exc
            self._suspect = False

    async def ping(self) -> bool:
        """Readiness: the broker answers a metadata request."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2.0)
        except (KafkaError, TimeoutError, OSError):
            return False
        return True

    async def stop(self) -> None:
        """Flush and close (safe to call twice)."""
        self._stopping = True
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
            self._connect_task = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
