"""The quota gate's counters in a dict (the worker keeps them in a Faust table)."""

from __future__ import annotations


class DictCounters:
    """``agents_pipeline.quota.Counters`` over a plain dict."""

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    def get(self, key: str) -> int:
        return self.data.get(key, 0)

    def add(self, key: str, amount: int) -> None:
        self.data[key] = self.data.get(key, 0) + amount
