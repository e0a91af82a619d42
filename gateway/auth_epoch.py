"""The auth epoch: one value in Redis that makes a revocation take effect at once everywhere.

Every gateway process and every worker's admin views cache API keys and channels, so that
a burst of requests costs no database round trip each (``gateway/auth.py``,
``gateway/channel_cache.py``). Whatever invalidates those rows — a key revoked, a workspace
changed or deactivated, a channel changed or deleted — writes a new random value to
``omnichat:auth:epoch`` once its transaction has committed (``bump``). Every request that
uses a cached row first reads the value (``current``) and trusts an entry only if it was
loaded under the value read now; anything else is loaded again from the database.

Why a value read per request rather than a pub/sub broadcast: a broadcast reaches the other
processes *some* time later, and the contract says a revoked key stops working at once. A
read issued after the revocation's answer always sees the new value. Its cost is small:
requests that arrive while one ``GET`` is in flight share the next one (sent after they
asked, so each still sees every bump that finished before it arrived), over the gateway's
pipelined RESP connection. A random value, not a counter: a Redis that restarts empty
cannot bring back a value an old entry was loaded under.

Redis unreachable: the epoch is unknown (``None``), and a cached entry is trusted only for
``auth_cache_unverified_seconds`` (fail closed); the database still answers. The process
that cannot write its bump logs it; the others then see the change within
``auth_cache_seconds``, the bound on every entry's age.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Generic, TypeVar

from gateway.resp import RespClient, RespError

log = logging.getLogger(__name__)

EPOCH_KEY = "omnichat:auth:epoch"
_NEVER_BUMPED = b"-"  # the key does not exist: a value of its own, distinct from any bump


class AuthEpoch:
    """Reads (shared per round trip) and bumps the epoch; ``None`` while Redis is away."""

    def __init__(
        self,
        redis: RespClient | None,
        *,
        timeout: float = 0.25,
        cooldown: float = 1.0,
        key: str = EPOCH_KEY,
    ) -> None:
        self.redis = redis
        self.timeout = timeout
        self.cooldown = cooldown
        self.key = key
        self._waiting: list[asyncio.Future[bytes | None]] = []
        self._busy = False
        self._task: asyncio.Task | None = None  # the running drain, referenced while it runs
        self._down_until = 0.0

    async def current(self) -> bytes | None:
        """The epoch as of now (read after this call began), or None when Redis cannot say."""
        if self.redis is None or time.monotonic() < self._down_until:
            return None
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        if not self._busy:
            self._busy = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        assert self.redis is not None
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []  # all asked before this GET is sent
                value: bytes | None
                try:
                    async with asyncio.timeout(self.timeout):
                        reply = await self.redis.command("GET", self.key)
                    value = reply if isinstance(reply, bytes) else _NEVER_BUMPED
                except (RespError, OSError, TimeoutError) as exc:
                    self._failed(exc)
                    value = None
                for fut in batch:
                    if not fut.done():
                        fut.set_result(value)
        finally:
            self._busy = False

    def _failed(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("auth epoch unreadable (Redis): caches trusted briefly only: %r", exc)
        self._down_until = time.monotonic() + self.cooldown

    async def bump(self) -> bool:
        """Announce that cached auth rows changed (call after the change committed)."""
        if self.redis is None:
            return False
        value = secrets.token_hex(16)
        for attempt in range(3):
            try:
                async with asyncio.timeout(1.0):
                    await self.redis.command("SET", self.key, value)
                return True
            except (RespError, OSError, TimeoutError) as exc:
                if attempt == 2:
                    log.error(
                        "could not publish an auth change to Redis (%r): other processes see "
                        "it within auth_cache_seconds",
                        exc,
                    )
                else:
                    await asyncio.sleep(0.1)
        return False


K = TypeVar("K")
V = TypeVar("V")


class EpochCache(Generic[K, V]):
    """A per-process cache whose entries hold only under the epoch they were loaded in."""

    def __init__(self, ttl: float, unverified_ttl: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.unverified_ttl = unverified_ttl
        self.max_entries = max_entries
        self._items: dict[K, tuple[float, bytes | None, V]] = {}

    def get(self, key: K, epoch: bytes | None) -> tuple[bool, V | None]:
        """(True, value) for an entry to trust under ``epoch`` (None: unknown); else (False,
        None)."""
        hit = self._items.get(key)
        if hit is None:
            return False, None
        at, loaded_under, value = hit
        age = time.monotonic() - at
        if epoch is None:
            fresh = age < self.unverified_ttl
        else:
            fresh = loaded_under == epoch and age < self.ttl
        return (True, value) if fresh else (False, None)

    def put(self, key: K, epoch: bytes | None, value: V, at: float) -> None:
        """Remember ``value`` as loaded at ``at`` (monotonic) under ``epoch`` (read before it)."""
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (at, epoch, value)

    def evict(self, key: K) -> None:
        """Forget one entry."""
        self._items.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
