"""Who is calling: API keys with ``X-Workspace-ID``, the platform admin token, or a provider.

Keys are cached per process so that a burst of requests costs no database round trip
each. A cached key holds only under the auth epoch it was loaded in
(``gateway/auth_epoch.py``): a revocation or a workspace change in any process bumps the
epoch, and every process loads the key again on its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from gateway.auth_epoch import AuthEpoch, EpochCache
from gateway.errors import ApiError
from storage import api_keys


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of a workspace route."""

    key_id: UUID
    workspace_id: UUID
    scopes: tuple[str, ...]

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return str(self.key_id)


PLATFORM_ADMIN = "platform_admin"


class KeyCache:
    """key hash → key row, while the auth epoch holds (and ``ttl`` seconds at most)."""

    def __init__(self, ttl: float, epoch: AuthEpoch, unverified_ttl: float = 0.5) -> None:
        self.epoch = epoch
        self._rows: EpochCache[str, dict[str, Any]] = EpochCache(ttl, unverified_ttl)

    async def lookup(self, pool: AsyncConnectionPool, key_hash: str) -> dict[str, Any] | None:
        """The key's row, from the cache or the database (unknown keys are not cached)."""
        epoch = await self.epoch.current()  # read before the database: see auth_epoch
        found, row = self._rows.get(key_hash, epoch)
        if found:
            return row
        loaded_at = time.monotonic()
        async with pool.connection() as conn:
            row = await api_keys.find_by_hash(conn, key_hash=key_hash)
        if row is None:
            self._rows.evict(key_hash)
            return None
        self._rows.put(key_hash, epoch, row, loaded_at)
        return row

    def evict(self, key_hash: str) -> None:
        """Forget one key (after revocation)."""
        self._rows.evict(key_hash)

    def clear(self) -> None:
        """Forget everything (after a workspace changed)."""
        self._rows.clear()


def bearer(request: web.Request) -> str | None:
    """The bearer token of the Authorization header."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_admin(request: web.Request, admin_token: str | None) -> None:
    """401 unless the request carries the platform admin token."""
    token = bearer(request)
    if not admin_token or token is None or not hmac.compare_digest(token, admin_token):
        raise ApiError(401, "unauthorized", "the platform admin token is required")


async def authenticate(request: web.Request, pool: AsyncConnectionPool, cache: KeyCache) -> Caller:
    """Resolve ``Authorization`` + ``X-Workspace-ID`` into a Caller, with the contract's rules.

    401: no, unknown, revoked or expired key. 403: the key belongs to another
    workspace, or the workspace is deactivated. 400: the header is missing or
    not a UUID. Scopes are checked by ``require_scope``.
    """
    token = bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer ...)")
    row = await cache.lookup(pool, hashlib.sha256(token.encode()).hexdigest())
    if row is None or row["revoked_at"] is not None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        raise ApiError(401, "unauthorized", "API key expired")
    header = request.headers.get("X-Workspace-ID")
    if not header:
        raise ApiError(400, "workspace_header_required", "the X-Workspace-ID header is required")
    try:
        workspace_id = UUID(header)
    except ValueError:
        raise ApiError(400, "invalid_workspace_header", "X-Workspace-ID must be a UUID") from None
    if workspace_id != row["workspace_id"]:
        raise ApiError(403, "forbidden", "this API key belongs to another workspace")
    if not row["workspace_active"]:
        raise ApiError(403, "workspace_inactive", "this workspace is deactivated")
    return Caller(key_id=row["id"], workspace_id=workspace_id, scopes=tuple(row["scopes"]))


def require_scope(caller: Caller, method: str) -> None:
    """``read`` keys may only GET (and HEAD); ``admin`` keys may do everything."""
    if "admin" in caller.scopes:
        return
    if method in ("GET", "HEAD") and "read" in caller.scopes:
        return
    raise ApiError(403, "insufficient_scope", "this API key's scope does not allow this call")
