"""Restarting the embedded broker before its log makes it slow, with nothing in flight lost.

Tansu 0.6.0 (the embedded broker) keeps every record in memory for as long as it runs:
it ignores ``retention.ms`` and ``retention.bytes`` and answers DeleteRecords by closing
the connection (its memory storage has no such operation), so no record is ever removed.
Its memory grows by 10 to 20 KB per message through the pipeline, and every fetch costs
more as a partition's log grows (measured in docs/ARCHITECTURE.md, "Retention"). Only
deleting a topic frees anything, and a topic cannot be deleted under a producer that may
be writing to it.

So the stack that owns the broker restarts it once its memory passes
``OMNICHAT_EMBEDDED_BROKER_MAX_MB``, the way one empties a queue before replacing it:

1. intake is paused: the gateway is frozen (SIGSTOP, as ``docker pause`` does); requests
   wait in its socket's backlog, none is answered or refused;
2. the pipeline drains: every partition the workers' consumer group reads has its
   committed offset at its end (a stage commits a record only after its outputs are
   acknowledged, so nothing is left that could still produce);
3. the workers stop (killed: drained, they hold nothing the old broker does not also
   lose, and a clean stop would spend seconds leaving a group that goes with it), the
   broker is replaced by an empty one on the same port, the topics are created again,
   and the gateway resumes (its producer reconnects by itself);
4. new workers start: their tables' changelogs are gone with the old broker and are
   seeded from PostgreSQL (streams/seed.py), so no counter starts again from zero.

It waits for a quiet moment: only when fewer than ``QUIET_RECORDS`` records are in flight
is intake frozen, for at most ``drain_timeout`` seconds (a drain that does not complete
in time resumes the gateway and leaves the broker as it is until the next check). Past
twice the limit it stops waiting for one: intake stays frozen until the pipeline has
caught up, as back-pressure (providers retry what they could not deliver).

What only the broker held is lost with it: ``messages.sent`` (read by analysts' taps)
and ``deadletter`` records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from omnichat.embedded import EmbeddedBroker
from streams.offsets import end_offsets
from streams.topics import (
    DEADLETTER,
    MESSAGES_SENT,
    PIPELINE_TOPICS,
    bootstrap_servers,
    ensure_topics,
)

log = logging.getLogger(__name__)

QUIET_RECORDS = 2000  # in flight, at most, for intake to be frozen (drains in seconds)
HARD_DRAIN_SECONDS = 600.0  # past twice the limit: how long intake may stay frozen

# The topics the workers' consumer group reads (messages.sent and deadletter have no stage).
CONSUMED = tuple(t for t in PIPELINE_TOPICS if t not in (MESSAGES_SENT, DEADLETTER))


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux); 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def behind(broker_url: str, group: str, partitions: int) -> int:
    """Records the group has not committed yet on the topics it reads."""
    servers = bootstrap_servers(broker_url)
    tps = [TopicPartition(t, p) for t in CONSUMED for p in range(partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    # The ends after the commits: a stage's outputs are acknowledged before its input is
    # committed, so everything the committed records caused is within these ends.
    ends = await end_offsets(servers, tps)
    return sum(
        max(0, end - max(0, committed[tp].offset if tp in committed else 0))
        for tp, end in ends.items()
    )


@dataclass
class Recycled:
    """What one restart of the broker did."""

    broker_mb: float
    paused_seconds: float  # intake frozen
    seconds: float  # until new workers were started


class BrokerRecycler:
    """Restarts ``broker`` (see the module doc) when its memory passes ``max_mb``.

    The owner of the processes gives the four steps it alone can take: freezing and
    resuming intake, stopping and starting the workers.
    """

    def __init__(
        self,
        broker: EmbeddedBroker,
        *,
        group: str,
        partitions: int,
        topic_configs: dict[str, str],
        max_mb: float,
        pause_intake: Callable[[], None],
        resume_intake: Callable[[], None],
        stop_workers: Callable[[], None],
        start_workers: Callable[[], None],
        drain_timeout: float = 15.0,
    ) -> None:
        self.broker = broker
        self.group = group
        self.partitions = partitions
        self.topic_configs = topic_configs
        self.max_mb = max_mb
        self.pause_intake = pause_intake
        self.resume_intake = resume_intake
        self.stop_workers = stop_workers
        self.start_workers = start_workers
        self.drain_timeout = drain_timeout
        self.count = 0

    def maybe_recycle(self) -> Recycled | None:
        """Recycle when due and quiet enough (see the module doc); None when not done."""
        size = rss_mb(self.broker.pid or 0)
        if self.max_mb <= 0 or size <= self.max_mb:
            return None
        if size > 2 * self.max_mb:
            return self.recycle(drain_timeout=HARD_DRAIN_SECONDS)
        try:
            left = asyncio.run(behind(self.broker.url, self.group, self.partitions))
        except Exception as exc:
            log.info("broker at %.0f MB: in-flight records unknown (%r)", size, exc)
            return None
        if left > QUIET_RECORDS:
            log.info("broker at %.0f MB: waiting for a quieter moment (%d in flight)", size, left)
            return None
        return self.recycle()

    def recycle(self, drain_timeout: float | None = None) -> Recycled | None:
        """Pause intake, drain, replace the broker, resume (see the module doc)."""
        started = time.monotonic()
        size = rss_mb(self.broker.pid or 0)
        timeout = self.drain_timeout if drain_timeout is None else drain_timeout
        self.pause_intake()
        try:
            left = asyncio.run(self._drain(timeout))
            if left:
                log.warning(
                    "broker at %.0f MB not restarted: %d records still in flight after %.0fs",
                    size,
                    left,
                    timeout,
                )
                return None
            self.stop_workers()
            self.broker.stop()
            self.broker.start()  # same port: every client reconnects to the empty broker
            asyncio.run(ensure_topics(self.broker.url, self.partitions, configs=self.topic_configs))
        finally:
            self.resume_intake()
        paused = time.monotonic() - started
        self.start_workers()
        self.count += 1
        done = Recycled(size, paused, time.monotonic() - started)
        log.warning(
            "embedded broker restarted empty at %.0f MB (restart %d): intake paused %.1fs",
            size,
            self.count,
            paused,
        )
        return done

    async def _drain(self, timeout: float) -> int:
        """Wait until the group has committed everything twice in a row; what is left."""
        deadline = time.monotonic() + timeout
        clean = 0
        left = -1
        while time.monotonic() < deadline:
            try:
                left = await behind(self.broker.url, self.group, self.partitions)
            except Exception as exc:  # broker busy: look again
                log.info("drain: %r", exc)
                left = -1
            clean = clean + 1 if left == 0 else 0
            if clean >= 2:  # twice, so that a commit still on its way is not taken for none
                return 0
            await asyncio.sleep(0.3)
        return max(left, 1)
