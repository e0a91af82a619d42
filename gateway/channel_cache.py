"""Channels as webhooks need them: cached per process, secrets decrypted once.

A webhook names its channel in the URL; looking it up (and decrypting its
credentials) on every request would cost a database round trip and a Fernet
decryption each. An entry holds only under the auth epoch it was loaded in
(``gateway/auth_epoch.py``), and ``ttl`` seconds at most: a channel changed or
deleted, or a workspace deactivated, in any process is seen at once in all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from gateway.auth_epoch import AuthEpoch, EpochCache
from storage import channels
from storage.secrets import SecretBox
from streams.contracts import ProviderName


@dataclass(frozen=True)
class ChannelInfo:
    """What a webhook needs to know of its channel (secrets included: never log it)."""

    id: UUID
    workspace_id: UUID
    provider: ProviderName
    is_active: bool
    workspace_active: bool
    config: dict[str, Any]  # clear config with secrets merged in
    id_str: str = field(init=False)  # the ids as text, computed once: each webhook uses them
    workspace_str: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_str", str(self.id))
        object.__setattr__(self, "workspace_str", str(self.workspace_id))

    def __repr__(self) -> str:  # never print secrets by accident
        return f"ChannelInfo(id={self.id}, provider={self.provider})"


class ChannelCache:
    """channel id → ChannelInfo, for a few seconds."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        box: SecretBox,
        ttl: float,
        epoch: AuthEpoch,
        unverified_ttl: float = 0.5,
    ) -> None:
        self.pool = pool
        self.box = box
        self.epoch = epoch
        self._items: EpochCache[UUID, ChannelInfo | None] = EpochCache(ttl, unverified_ttl)

    async def get(self, channel_id: UUID) -> ChannelInfo | None:
        """The channel, or None when it does not exist (also cached, briefly)."""
        epoch = await self.epoch.current()  # read before the database: see auth_epoch
        found, cached = self._items.get(channel_id, epoch)
        if found:
            return cached
        loaded_at = time.monotonic()
        async with self.pool.connection() as conn:
            row = await channels.get_channel_for_webhook(conn, channel_id=channel_id)
        info = None
        if row is not None:
            info = ChannelInfo(
                id=row["id"],
                workspace_id=row["workspace_id"],
                provider=ProviderName(row["provider"]),
                is_active=row["is_active"],
                workspace_active=row["workspace_active"],
                config={**row["config"], **self.box.open(row["secrets"])},
            )
        self._items.put(channel_id, epoch, info, loaded_at)
        return info

    def evict(self, channel_id: UUID) -> None:
        """Forget a channel (after it changed)."""
        self._items.evict(channel_id)

    def clear(self) -> None:
        """Forget everything (after a workspace changed)."""
        self._items.clear()
