"""How many taps a workspace holds open, across every gateway process (a lease per tap).

Each tap is a broker consumer of every partition of its topic, so a workspace may hold
only ``tap_max_open_per_workspace`` at once. A process-local count would allow that many
per gateway process; the count lives in Redis instead: a sorted set per workspace, one
member per open tap, scored by when its lease ends. A tap renews its lease while it runs
and removes it when it closes; a gateway that dies leaves leases that end within
``LEASE_SECONDS``. The check and the add are one script, so two processes cannot both
take the last slot. Times are Redis' own clock (no skew between gateway hosts).

Redis unreachable: the limit is applied per process, from the local count, rather than
refusing every tap or admitting any number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import ApiError

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
RENEW_SECONDS = LEASE_SECONDS / 3
REDIS_TIMEOUT = 1.0
PREFIX = "omnichat:taps:"

# KEYS[1]: the workspace's set; ARGV: limit, lease ms, member. 1 when taken, 0 when full.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
# KEYS[1]: the set; ARGV: lease ms, member. Renews the member's lease if it still has one.
_RENEW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"""

LOCAL: Counter[UUID] = Counter()  # taps open in this process, per workspace


class TapLease:
    """One open tap's place in its workspace's count; ``release`` gives it back."""

    def __init__(self, redis: Redis, workspace_id: UUID, member: str, shared: bool) -> None:
        self.redis = redis
        self.workspace_id = workspace_id
        self.member = member
        self.shared = shared  # counted in Redis (False: only in this process)
        self._renewing: asyncio.Task | None = None
        if shared:
            self._renewing = asyncio.get_running_loop().create_task(self._renew())

    @property
    def key(self) -> str:
        """The workspace's sorted set."""
        return f"{PREFIX}{self.workspace_id}"

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    await self.redis.eval(
                        _RENEW, 1, self.key, int(LEASE_SECONDS * 1000), self.member
                    )
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("tap lease not renewed (it ends by itself): %r", exc)

    async def release(self) -> None:
        """Give the place back (safe to call twice)."""
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
            self._renewing = None
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    await self.redis.zrem(self.key, self.member)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("tap lease not removed (it ends by itself): %r", exc)
        if self.member:
            self.member = ""
            LOCAL[self.workspace_id] -= 1
            if LOCAL[self.workspace_id] <= 0:
                del LOCAL[self.workspace_id]


async def acquire(redis: Redis, workspace_id: UUID, limit: int) -> TapLease:
    """A lease for one more tap of the workspace, or 429 when it holds ``limit`` already."""
    member = secrets.token_hex(8)
    key = f"{PREFIX}{workspace_id}"
    try:
        async with asyncio.timeout(REDIS_TIMEOUT):
            taken = await redis.eval(_ACQUIRE, 1, key, limit, int(LEASE_SECONDS * 1000), member)
        shared = True
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("tap count unavailable in Redis, counting in this process: %r", exc)
        taken, shared = LOCAL[workspace_id] < limit, False
    if not taken:
        raise ApiError(
            429,
            "too_many_taps",
            f"this workspace already has {limit} taps open; close one first",
            {"limit": limit, "scope": "workspace"},
            headers={"Retry-After": "5"},
        )
    LOCAL[workspace_id] += 1
    return TapLease(redis, workspace_id, member, shared)
