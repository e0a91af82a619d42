"""Rows every message needs and that rarely change, read through a short cache.

Stage functions take a ``Lookups``; the worker shares one with a few seconds of TTL
(a channel's agent or a newly published version reaches the stream within that
time), tests use ``Lookups(ttl=0)`` to read through.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from storage import agents, channels, quotas, workspaces
from storage.cache import TTLCache
from storage.db import Conn

Row = dict[str, Any] | None


class Lookups:
    """Cached reads of channels, published versions, versions, workspaces and limits."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._channels: TTLCache[Row] = TTLCache(ttl)
        self._published: TTLCache[Row] = TTLCache(ttl)
        self._versions: TTLCache[Row] = TTLCache(ttl)
        self._workspaces: TTLCache[Row] = TTLCache(ttl)
        self._limits: TTLCache[Row] = TTLCache(ttl)

    async def channel(self, conn: Conn, workspace_id: UUID, channel_id: UUID) -> Row:
        """A channel of the workspace."""
        return await self._channels.get(
            (workspace_id, channel_id),
            lambda: channels.get_channel(conn, workspace_id=workspace_id, channel_id=channel_id),
        )

    async def published_version(self, conn: Conn, workspace_id: UUID, agent_id: UUID) -> Row:
        """The agent's published version."""
        return await self._published.get(
            (workspace_id, agent_id),
            lambda: agents.published_version_for_agent(
                conn, workspace_id=workspace_id, agent_id=agent_id
            ),
        )

    async def version(
        self, conn: Conn, workspace_id: UUID, agent_id: UUID, version_id: UUID
    ) -> Row:
        """A version (published versions never change)."""
        return await self._versions.get(
            version_id,
            lambda: agents.get_version(
                conn, workspace_id=workspace_id, agent_id=agent_id, version_id=version_id
            ),
        )

    async def workspace(self, conn: Conn, workspace_id: UUID) -> Row:
        """A workspace."""
        return await self._workspaces.get(
            workspace_id, lambda: workspaces.get_workspace(conn, workspace_id=workspace_id)
        )

    async def limits(self, conn: Conn, workspace_id: UUID) -> Row:
        """A workspace's monthly limits (plan with overrides)."""
        return await self._limits.get(
            workspace_id, lambda: quotas.monthly_limits(conn, workspace_id=workspace_id)
        )


READ_THROUGH = Lookups(ttl=0)
