"""``StallWatch``: which partitions' commits stopped while records wait beyond them.

The decision behind the worker's stall watchdog (``unstall`` in ``streams/app.py``), kept
apart from the consumer so that it can be tested without a broker. A partition is stuck
when its committed offset (the next one to handle) has not moved for ``seconds`` while
its end offset is beyond it. An idle partition (committed at the end) is never stuck,
however long it stays that way, and a commit that moves starts the clock again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)  # a partition (faust's TP)


class StallWatch(Generic[P]):
    """Remembers since when each partition's commit has stood still below its end."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._since: dict[P, tuple[int, float]] = {}

    def clear(self) -> None:
        """Forget every clock (a rebalance or a seek changes what the offsets mean)."""
        self._since.clear()

    def stuck(self, offsets: Iterable[tuple[P, int | None, int | None]], now: float) -> list[P]:
        """The partitions stuck at ``now``, given each one's (partition, committed, end);
        a committed offset of None is the partition's start, an unknown end is skipped."""
        found: list[P] = []
        for tp, committed, end in offsets:
            at = committed or 0
            if end is None or end <= at:
                self._since.pop(tp, None)
                continue
            since = self._since.get(tp)
            if since is None or since[0] != at:
                self._since[tp] = (at, now)
            elif now - since[1] >= self.seconds:
                found.append(tp)
        return found
