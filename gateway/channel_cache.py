"""Channels as webhooks need them: cached per process, secrets decrypted once.

A webhook names its channel in the URL; looking it up (and decrypting its
credentials) on every request would cost a database round trip and a Fernet
decryption each. Entries live ``ttl`` seconds; the process that changes a
channel evicts it at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

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

    def __init__(self, pool: AsyncConnectionPool, box: SecretBox, ttl: float) -> None:
        self.pool = pool
        self.box = box
        self.ttl = ttl
        self._items: dict[UUID, tuple[float, ChannelInfo | None]] = {}

    async def get(self, channel_id: UUID) -> ChannelInfo | None:
        """The channel, or None when it does not exist (also cached, briefly)."""
        now = time.monotonic()
        hit = self._items.get(channel_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
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
        if len(self._items) > 100_000:
            self._items.clear()
        self._items[channel_id] = (now, info)
        return info

    def evict(self, channel_id: UUID) -> None:
        """Forget a channel (after it changed)."""
        self._items.pop(channel_id, None)

    def clear(self) -> None:
        """Forget everything (after a workspace changed)."""
        self._items.clear()
