"""Producing a stage's outputs: straight to the producer, partitions by a cached hash.

``Topic.send`` wraps every record in faust's pending-message, future-message and
sensor bookkeeping before it reaches the producer; the stages await the producer's
futures themselves before acknowledging their batch, so that layer added only CPU
(about a third of producing). ``KeyPartitioner`` is aiokafka's default partitioner
with murmur2 (pure Python) cached per key: a conversation's key is hashed once for
all the records of its messages, not once per record.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Sequence
from functools import lru_cache
from typing import Any

import faust
from aiokafka.partitioner import murmur2

cached_murmur2 = lru_cache(maxsize=65536)(murmur2)


class KeyPartitioner:
    """aiokafka's ``DefaultPartitioner`` with the key's hash cached (same partitions)."""

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        """The key's partition; a random available one without a key."""
        if key is None:
            return random.choice(available or all_partitions)
        idx = (cached_murmur2(key) & 0x7FFFFFFF) % len(all_partitions)
        return all_partitions[idx]


async def send(
    app: faust.App,
    topic: faust.TopicT,
    value: bytes,
    key: bytes | None = None,
    partition: int | None = None,
) -> Awaitable[Any]:
    """Hand a record to the producer; the result resolves when the broker acknowledged it."""
    return await app.producer.send(topic.get_topic_name(), key, value, partition, None, None)
