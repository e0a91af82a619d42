"""Conversations as the pipeline moves them: open, touch, human takeover."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from storage.db import Conn

Row = dict[str, Any]
COLS = (
    "id, workspace_id, channel_id, contact_id, status, mode, human_until, last_message_at,"
    " last_inbound_at, created_at, updated_at"
)


async def open_conversation(
    conn: Conn, *, workspace_id: UUID, channel_id: UUID, contact_id: UUID
) -> Row:
    """The contact's open conversation on this channel, opened if there is none.

    The row's ``opened`` is true when this call opened it (the activity stats count it).
    """
    cur = await conn.execute(
        f"SELECT {COLS} FROM conversations WHERE channel_id = %s AND contact_id = %s"
        " AND status = 'open' AND workspace_id = %s FOR UPDATE",
        (channel_id, contact_id, workspace_id),
    )
    row = await cur.fetchone()
    if row is not None:
        return {**row, "opened": False}
    cur = await conn.execute(
        "INSERT INTO conversations (workspace_id, channel_id, contact_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (channel_id, contact_id) WHERE status = 'open'"
        f" DO UPDATE SET updated_at = now() RETURNING {COLS}, (xmax = 0) AS opened",
        (workspace_id, channel_id, contact_id),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def touch(
    conn: Conn, *, workspace_id: UUID, conversation_id: UUID, at: datetime, inbound: bool
) -> None:
    """Record a message's time (and the 24-hour window's start for an inbound one)."""
    await conn.execute(
        "UPDATE conversations SET last_message_at = greatest(coalesce(last_message_at, %s), %s),"
        " last_inbound_at = CASE WHEN %s THEN greatest(coalesce(last_inbound_at, %s), %s)"
        " ELSE last_inbound_at END WHERE id = %s AND workspace_id = %s",
        (at, at, inbound, at, at, conversation_id, workspace_id),
    )


async def set_mode(
    conn: Conn,
    *,
    workspace_id: UUID,
    conversation_id: UUID,
    mode: str,
    human_until: datetime | None,
) -> None:
    """Switch between ``bot`` and ``human`` (with an expiry for a phone takeover)."""
    await conn.execute(
        "UPDATE conversations SET mode = %s, human_until = %s WHERE id = %s AND workspace_id = %s",
        (mode, human_until, conversation_id, workspace_id),
    )


async def get_conversation(conn: Conn, *, workspace_id: UUID, conversation_id: UUID) -> Row | None:
    """One conversation."""
    cur = await conn.execute(
        f"SELECT {COLS} FROM conversations WHERE id = %s AND workspace_id = %s",
        (conversation_id, workspace_id),
    )
    return await cur.fetchone()
