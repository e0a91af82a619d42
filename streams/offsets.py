"""True end offsets of partitions, also on a broker whose ListOffsets answers short.

Tansu 0.6.0 (the dev and test broker) answers ListOffsets(latest) with the last
*batch's* base offset + 1: after one batch of 7 records at offsets 13..19 it says
14, not 20 (measured; a fetch's high watermark says 20). Faust's table recovery
reads each changelog up to the ListOffsets figure, so after a rebalance it
either stopped before the last batch's other records or, when an earlier
recovery had already read past that figure, crashed with ``ConsistencyError``
("persisted offset ... higher than the last offset") and left the worker paused
for good. A fetch's high watermark is right on every broker, so the end of a
partition is the larger of ListOffsets' answer and the high watermark of a fetch
at that answer minus one. On Redpanda and Kafka the two agree and the fetch only
confirms it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

# A fetch that finds nothing is held this long by Tansu (it ignores min bytes).
PROBE_WAIT_MS = 10


async def end_offsets(
    bootstrap_servers: str | list[str],
    tps: Collection[TopicPartition],
    *,
    timeout: float = 10.0,
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition (0 when empty)."""
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=PROBE_WAIT_MS,
        max_partition_fetch_bytes=64 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(list(tps))
        listed = await consumer.end_offsets(list(tps))
        return await confirm(consumer, listed, timeout=timeout)
    finally:
        await consumer.stop()


async def confirm(
    consumer: AIOKafkaConsumer,
    listed: Mapping[TopicPartition, int],
    *,
    timeout: float = 10.0,
) -> dict[TopicPartition, int]:
    """Raise ListOffsets' answers to the high watermark a fetch reports.

    ``consumer`` must have the partitions assigned and must not have fetched them
    yet (a high watermark it already holds may be old); the probe moves its
    positions.
    """
    ends = dict(listed)
    pending = {tp for tp, end in listed.items() if end > 0}  # an empty partition says 0
    for tp in pending:
        consumer.seek(tp, listed[tp] - 1)
    deadline = time.monotonic() + timeout
    while pending:
        await consumer.getmany(*pending, timeout_ms=100, max_records=1)
        for tp in list(pending):
            high = consumer.highwater(tp)
            if high is not None:
                ends[tp] = max(ends[tp], high)
                pending.discard(tp)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"no fetch answered for {sorted(map(str, pending))}")
    return ends
