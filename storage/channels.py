"""Channels: non-secret config in clear, credentials sealed by ``SecretBox``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
_COLS = (
    "c.id, c.workspace_id, c.name, c.provider, c.config, c.secrets, c.agent_id, c.is_active,"
    " c.created_at, c.updated_at"
)


async def create_channel(
    conn: Conn,
    *,
    workspace_id: UUID,
    name: str,
    provider: str,
    config: dict[str, Any],
    secrets: bytes | None,
    agent_id: UUID | None,
) -> Row:
    """Insert a channel."""
    cur = await conn.execute(
        "INSERT INTO channels AS c (workspace_id, name, provider, config, secrets, agent_id)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLS}",
        (workspace_id, name, provider, Jsonb(config), secrets, agent_id),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def get_channel(conn: Conn, *, workspace_id: UUID, channel_id: UUID) -> Row | None:
    """A channel of this workspace."""
    cur = await conn.execute(
        f"SELECT {_COLS} FROM channels c WHERE c.id = %s AND c.workspace_id = %s",
        (channel_id, workspace_id),
    )
    return await cur.fetchone()


async def get_channel_for_webhook(conn: Conn, *, channel_id: UUID) -> Row | None:
    """A channel by id alone, with its workspace's active flag.

    Webhooks arrive without a workspace header: the channel id in the URL is
    what names the workspace.
    """
    cur = await conn.execute(
        f"SELECT {_COLS}, w.is_active AS workspace_active FROM channels c"
        " JOIN workspaces w ON w.id = c.workspace_id WHERE c.id = %s",
        (channel_id,),
    )
    return await cur.fetchone()


async def list_channels(
    conn: Conn, *, workspace_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """A workspace's channels, oldest first."""
    cond, params = keyset(cursor, descending=False, alias="c")
    cur = await conn.execute(
        f"SELECT {_COLS} FROM channels c WHERE c.workspace_id = %s AND {cond}"
        f" {order_by(descending=False, alias='c')} LIMIT %s",
        [workspace_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def update_channel(
    conn: Conn, *, workspace_id: UUID, channel_id: UUID, changes: dict[str, Any]
) -> Row | None:
    """Apply changes to name, config, secrets, agent_id, is_active."""
    allowed = {"name", "config", "secrets", "agent_id", "is_active"}
    sets = [k for k in changes if k in allowed]
    if not sets:
        return await get_channel(conn, workspace_id=workspace_id, channel_id=channel_id)
    values = [Jsonb(changes[k]) if k == "config" else changes[k] for k in sets]
    assignments = ", ".join(f"{k} = %s" for k in sets)
    cur = await conn.execute(
        f"UPDATE channels AS c SET {assignments} WHERE c.id = %s AND c.workspace_id = %s"
        f" RETURNING {_COLS}",
        [*values, channel_id, workspace_id],
    )
    return await cur.fetchone()


async def delete_channel(conn: Conn, *, workspace_id: UUID, channel_id: UUID) -> bool:
    """Delete a channel and everything of it (contacts, conversations, messages)."""
    cur = await conn.execute(
        "DELETE FROM channels WHERE id = %s AND workspace_id = %s", (channel_id, workspace_id)
    )
    return cur.rowcount == 1


# --- key rotation (platform maintenance: every workspace's channels, by id) -----------------


async def sealed_secrets_page(
    conn: Conn, *, after: UUID | None, limit: int
) -> list[tuple[UUID, bytes]]:
    """(id, sealed secrets) of the next ``limit`` channels with secrets, in id order.

    Platform-wide on purpose: ``omnichat rotate-secrets`` re-encrypts every workspace's
    credentials, as ``migrate`` changes every workspace's tables.
    """
    cur = await conn.execute(
        "SELECT id, secrets FROM channels WHERE secrets IS NOT NULL"
        " AND (%s::uuid IS NULL OR id > %s::uuid) ORDER BY id LIMIT %s",
        (after, after, limit),
    )
    return [(r["id"], bytes(r["secrets"])) for r in await cur.fetchall()]


async def replace_sealed_secrets(conn: Conn, *, channel_id: UUID, old: bytes, new: bytes) -> bool:
    """Swap a channel's sealed secrets, only if they are still ``old`` (a PATCH may have won)."""
    cur = await conn.execute(
        "UPDATE channels SET secrets = %s WHERE id = %s AND secrets = %s",
        (new, channel_id, old),
    )
    return cur.rowcount == 1
