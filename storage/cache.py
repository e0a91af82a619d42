"""A small time-bounded cache for rows the stream reads on every message (channels, agents).

A change made through the API reaches a worker within ``ttl`` seconds; in exchange a
burst of messages costs no database round trip per message for them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class TTLCache(Generic[T]):
    """key → value for ``ttl`` seconds, loaded on a miss."""

    def __init__(self, ttl: float, max_items: int = 50_000) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._items: dict[Hashable, tuple[float, T]] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The cached value, or ``await load()`` stored for next time."""
        now = time.monotonic()
        hit = self._items.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = await load()
        if len(self._items) >= self.max_items:
            self._items.clear()
        self._items[key] = (now, value)
        return value
