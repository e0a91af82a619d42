"""Writing to a Faust table from a batch of events, each key to its event's partition.

Faust's ``table[key] = value`` takes the changelog partition from the *current
event*, which a batch (``take_events``) does not track per record. Writing the
store and the changelog explicitly keeps each key on the partition of the record
it came from, so that recovery after a rebalance restores it where it belongs.
"""

from __future__ import annotations

from typing import Any

import faust


def put(table: faust.Table, partition: int, key: str, value: Any) -> None:
    """Set ``key`` locally and record it on the changelog partition ``partition``."""
    table.data[key] = value
    table.send_changelog(partition, key, value)


def add(table: faust.Table, partition: int, key: str, amount: int) -> int:
    """Increment a counter; returns the new total."""
    total = int(table.data.get(key, 0)) + amount
    put(table, partition, key, total)
    return total
