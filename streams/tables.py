"""Writing to a Faust table from a batch of events, each key to its event's partition.

Faust's ``table[key] = value`` takes the changelog partition from the *current
event*, which a batch (``take_events``) does not track per record. Writing the
store and the changelog explicitly keeps each key on the partition of the record
it came from, so that recovery after a rebalance restores it where it belongs.
"""

from __future__ import annotations

from typing import Any

import faust

from streams.partitions import workspace_partition


def put(table: faust.Table, partition: int, key: str, value: Any) -> None:
    """Set ``key`` locally and record it on the changelog partition ``partition``."""
    table.data[key] = value
    table.send_changelog(partition, key, value)


def add(table: faust.Table, partition: int, key: str, amount: int) -> int:
    """Increment a counter; returns the new total."""
    total = int(table.data.get(key, 0)) + amount
    put(table, partition, key, total)
    return total


class WorkspaceCounters:
    """Counters keyed ``workspace:...`` in a table, each on its workspace's partition.

    Stage code sees only ``get``/``add`` (``agents_pipeline.quota.Counters``); the
    changelog partition comes from the key's workspace, where Faust co-partitioning
    puts it beside the events that update it (see streams/partitions.py).
    """

    def __init__(self, table: faust.Table, partitions: int) -> None:
        self.table = table
        self.partitions = partitions

    def get(self, key: str) -> int:
        """The total, 0 when never counted."""
        return int(self.table.data.get(key, 0))

    def add(self, key: str, amount: int) -> None:
        """Add ``amount`` and record the total on the workspace's changelog partition."""
        workspace_id = key.split(":", 1)[0]
        add(self.table, workspace_partition(workspace_id, self.partitions), key, amount)
