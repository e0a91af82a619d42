"""Which partition a workspace's records go to, the way the producer's partitioner picks it.

``usage.events`` and ``audit.events`` are keyed by workspace id, so the default
partitioner (murmur2 of the key) places a workspace on one partition. The
generate stage must own the same workspace's quota counters, so
``messages.retrieved`` keeps its conversation key but is sent to this same
partition: Faust co-partitions topics with equal partition counts, so one worker
owns a workspace's usage table, quota counters and generate events together.
"""

from __future__ import annotations

from uuid import UUID

from streams.produce import cached_murmur2


def workspace_partition(workspace_id: UUID | str, partitions: int) -> int:
    """The partition of ``workspace_id`` among ``partitions`` (Kafka's default for its key)."""
    return (cached_murmur2(str(workspace_id).encode()) & 0x7FFFFFFF) % partitions
