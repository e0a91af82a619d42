"""The Redis fast path of webhook idempotency: answer a repeat without producing.

Correctness does not depend on Redis: the normalize stage's dedupe table and
``webhook_events``' unique key are the source of truth. Redis only saves work,
so it is used in the cheapest safe order:

1. ``seen(keys)`` before producing: one ``MGET``. A request is a repeat only
   when *all* its item keys are known.
2. ``mark(keys)`` only after the broker acknowledged; a key set before the
   produce could hide a webhook that was never made durable.

Concurrent requests share round trips: while one command is in flight, the
next requests queue, and then go together as one ``MGET`` (or one script call
that sets every key with its TTL). At 32 connections this turns ~32 Redis
commands per round trip into one. The commands go through ``gateway/resp.py``
(one pipelined connection), not redis-py, whose per-command cost was the
largest part of a webhook's CPU. Redis down or slow costs at most ``timeout``
per request, and then the fast path is skipped for ``cooldown`` seconds:
ingest never stops for Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from gateway.resp import RespClient, RespError

log = logging.getLogger(__name__)

# Sets every KEYS[i] with TTL ARGV[1] in one command (no per-key round trip or packing).
_MARK_SCRIPT = """
for i = 1, #KEYS do
    redis.call('SET', KEYS[i], '1', 'EX', ARGV[1])
end
return #KEYS
"""


class _Batcher:
    """Coalesces concurrent calls into one Redis command per round trip."""

    def __init__(self, run) -> None:  # run: async (list[str]) -> list[object]
        self._run = run
        self._pending: list[tuple[list[str], asyncio.Future]] = []
        self._busy = False

    async def submit(self, keys: list[str]) -> list[object]:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((keys, fut))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                flat = [k for keys, _ in batch for k in keys]
                try:
                    results = await self._run(flat)
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                i = 0
                for keys, fut in batch:
                    if not fut.done():
                        fut.set_result(results[i : i + len(keys)])
                    i += len(keys)
        finally:
            self._busy = False


class IdempotencyCache:
    """Fast-path idempotency keys in Redis, batched, failing open."""

    def __init__(
        self,
        redis: RespClient,
        *,
        ttl_seconds: int,
        timeout: float = 0.25,
        cooldown: float = 2.0,
        prefix: str = "omnichat:idem:",
    ) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.timeout = timeout
        self.cooldown = cooldown
        self.prefix = prefix
        self._down_until = 0.0
        self._seen_batcher = _Batcher(self._mget)
        self._to_mark: list[str] = []
        self._flush: asyncio.Task | None = None

    def full_keys(self, workspace_id: str, item_keys: Sequence[str]) -> list[str]:
        """Redis keys of a workspace's item keys."""
        return [f"{self.prefix}{workspace_id}:{k}" for k in item_keys]

    async def _mget(self, keys: list[str]) -> list[object]:
        # One timer per round trip, not per request: every request of the batch gets the
        # timeout (a request queued behind a slow command waits at most two of them).
        async with asyncio.timeout(self.timeout):
            return list(await self.redis.command("MGET", *keys))  # type: ignore[call-overload]

    async def _mset(self, keys: list[str]) -> list[object]:
        await self.redis.command("EVAL", _MARK_SCRIPT, len(keys), *keys, self.ttl)
        return [True] * len(keys)

    @property
    def available(self) -> bool:
        """False while Redis is considered down."""
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        if self.available:
            log.warning("redis fast path off for %.0fs: %r", self.cooldown, exc)
        self._down_until = time.monotonic() + self.cooldown

    async def seen(self, keys: list[str]) -> bool:
        """True when every key is already known (the request is a repeat)."""
        if not keys or not self.available:
            return False
        try:
            values = await self._seen_batcher.submit(keys)
        except (RespError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return False
        return all(v is not None for v in values)

    def mark(self, keys: list[str]) -> None:
        """Record keys as seen, in the background (the request does not wait for it).

        Keys join the pending batch; one flush task per batch sends them all in one
        script call, so a request costs no task and no timer of its own.
        """
        if not keys or not self.available:
            return
        self._to_mark.extend(keys)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._flush_marks())

    async def _flush_marks(self) -> None:
        while self._to_mark:
            keys, self._to_mark = self._to_mark, []
            try:
                async with asyncio.timeout(self.timeout * 4):
                    await self._mset(keys)
            except (RespError, OSError, TimeoutError) as exc:
                self._failed(exc)

    async def drain(self) -> None:
        """Wait for background marks (shutdown, tests)."""
        if self._flush is not None:
            await asyncio.gather(self._flush, return_exceptions=True)
