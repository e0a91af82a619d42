"""The consumer's fetch wait: short while records flow, longer once the worker is idle.

Tansu (the dev broker) holds a fetch that finds nothing for its whole wait, so
the wait is both the idle hop's latency and the polling rate: at 20 ms an idle
worker asks 50 times a second for every partition it holds, which cost the
broker ~0.15 of a core and the worker's consumer thread ~0.05 while documents
were being embedded (ops/eval/NOTE.md). After ``idle_after`` seconds without a
record the wait grows to ``idle_ms``; the first fetch that brings records sets
it back. Only the first hop of a message arriving after a quiet spell pays the
longer wait; under steady traffic every fetch brings something. On Redpanda and
Kafka a fetch answers as soon as data arrives, so the longer wait costs nothing.
"""

from __future__ import annotations

import time
from typing import Any


class IdleWait:
    """Adapts one aiokafka Fetcher's ``fetch_max_wait_ms`` to whether records flow."""

    def __init__(self, busy_ms: int, idle_ms: int, idle_after: float = 0.5) -> None:
        self.busy_ms = busy_ms
        self.idle_ms = max(idle_ms, busy_ms)
        self.idle_after = idle_after
        self.last_records = time.monotonic()

    def observe(self, got_records: bool) -> int:
        """The wait for the next fetch, given whether this one brought records."""
        now = time.monotonic()
        if got_records:
            self.last_records = now
            return self.busy_ms
        return self.idle_ms if now - self.last_records >= self.idle_after else self.busy_ms

    def install(self, fetcher: Any) -> None:
        """Wrap the fetcher's response handling (aiokafka 0.14: ``_proc_fetch_request``
        returns whether records were added) to set the next request's wait."""
        handle = fetcher._proc_fetch_request

        async def proc_fetch_request(assignment: Any, node_id: int, request: Any) -> bool:
            got = await handle(assignment, node_id, request)
            fetcher._fetch_max_wait_ms = self.observe(bool(got))
            return got

        fetcher._proc_fetch_request = proc_fetch_request
