"""Messages: inbound once per provider id, one bot reply per inbound, statuses that only rise."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage.db import Conn

Row = dict[str, Any]
COLS = (
    "id, workspace_id, channel_id, conversation_id, direction, author, type, text, status,"
    " status_rank, error_code, error_message, provider_message_id, in_reply_to, trace_id,"
    " sent_at, created_at, updated_at"
)

# Rank of each status: a message keeps the highest it reached (updates arrive out of order).
STATUS_RANK = {
    "received": 0,
    "pending": 0,
    "sending": 1,
    "accepted": 2,
    "sent": 3,
    "delivered": 4,
    "read": 5,
    "failed": 6,
    "blocked": 6,
    "deleted": 7,
}


async def insert_inbound(
    conn: Conn,
    *,
    workspace_id: UUID,
    channel_id: UUID,
    conversation_id: UUID,
    type_: str,
    text: str | None,
    payload: dict[str, Any],
    provider_message_id: str,
    trace_id: str,
    sent_at: datetime,
) -> tuple[Row, bool]:
    """Store an inbound message; returns (row, created). A replay returns the stored row."""
    cur = await conn.execute(
        "INSERT INTO messages (workspace_id, channel_id, conversation_id, direction, author,"
        " type, text, payload, status, provider_message_id, trace_id, sent_at)"
        " VALUES (%s, %s, %s, 'in', 'contact', %s, %s, %s, 'received', %s, %s, %s)"
        " ON CONFLICT (channel_id, provider_message_id) WHERE provider_message_id IS NOT NULL"
        f" DO NOTHING RETURNING {COLS}",
        (
            workspace_id,
            channel_id,
            conversation_id,
            type_,
            text,
            Jsonb(payload),
            provider_message_id,
            trace_id,
            sent_at,
        ),
    )
    row = await cur.fetchone()
    if row is not None:
        return row, True
    return await get_by_provider_id(
        conn, channel_id=channel_id, provider_message_id=provider_message_id
    ), False  # type: ignore[return-value]


async def get_by_provider_id(
    conn: Conn, *, channel_id: UUID, provider_message_id: str
) -> Row | None:
    """A message of a channel by the provider's id."""
    cur = await conn.execute(
        f"SELECT {COLS} FROM messages WHERE channel_id = %s AND provider_message_id = %s",
        (channel_id, provider_message_id),
    )
    return await cur.fetchone()


async def get_message(conn: Conn, *, workspace_id: UUID, message_id: UUID) -> Row | None:
    """One message."""
    cur = await conn.execute(
        f"SELECT {COLS} FROM messages WHERE id = %s AND workspace_id = %s",
        (message_id, workspace_id),
    )
    return await cur.fetchone()


async def insert_human_outbound(
    conn: Conn,
    *,
    workspace_id: UUID,
    channel_id: UUID,
    conversation_id: UUID,
    text: str | None,
    trace_id: str,
    provider_message_id: str | None = None,
    type_: str = "text",
    status: str = "pending",
    sent_at: datetime | None = None,
) -> tuple[Row, bool]:
    """Store a human's outbound message: from the API (to send) or seen from the phone (sent).

    With a provider id (seen from the phone), a replay returns the stored row.
    """
    cur = await conn.execute(
        "INSERT INTO messages (workspace_id, channel_id, conversation_id, direction, author,"
        " type, text, status, status_rank, provider_message_id, trace_id, sent_at)"
        " VALUES (%s, %s, %s, 'out', 'human', %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (channel_id, provider_message_id) WHERE provider_message_id IS NOT NULL"
        f" DO NOTHING RETURNING {COLS}",
        (
            workspace_id,
            channel_id,
            conversation_id,
            type_,
            text,
            status,
            STATUS_RANK[status],
            provider_message_id,
            trace_id,
            sent_at,
        ),
    )
    row = await cur.fetchone()
    if row is not None:
        return row, True
    assert provider_message_id is not None
    return await get_by_provider_id(
        conn, channel_id=channel_id, provider_message_id=provider_message_id
    ), False  # type: ignore[return-value]


async def insert_bot_reply(
    conn: Conn,
    *,
    workspace_id: UUID,
    channel_id: UUID,
    conversation_id: UUID,
    in_reply_to: UUID,
    text: str,
    trace_id: str,
) -> tuple[Row, bool]:
    """The one bot reply to an inbound message; a retry returns the stored one."""
    cur = await conn.execute(
        "INSERT INTO messages (workspace_id, channel_id, conversation_id, direction, author,"
        " type, text, status, in_reply_to, trace_id)"
        " VALUES (%s, %s, %s, 'out', 'bot', 'text', %s, 'pending', %s, %s)"
        " ON CONFLICT (in_reply_to) WHERE direction = 'out' AND author = 'bot'"
        f" DO NOTHING RETURNING {COLS}",
        (workspace_id, channel_id, conversation_id, text, in_reply_to, trace_id),
    )
    row = await cur.fetchone()
    if row is not None:
        return row, True
    cur = await conn.execute(
        f"SELECT {COLS} FROM messages WHERE in_reply_to = %s AND direction = 'out'"
        " AND author = 'bot'",
        (in_reply_to,),
    )
    return await cur.fetchone(), False  # type: ignore[return-value]


async def has_bot_reply(conn: Conn, *, workspace_id: UUID, in_reply_to: UUID) -> bool:
    """Whether an inbound message of this workspace already has its bot reply."""
    cur = await conn.execute(
        "SELECT 1 FROM messages WHERE in_reply_to = %s AND workspace_id = %s"
        " AND direction = 'out' AND author = 'bot'",
        (in_reply_to, workspace_id),
    )
    return await cur.fetchone() is not None


async def mark_sent(
    conn: Conn,
    *,
    workspace_id: UUID,
    message_id: UUID,
    provider_message_id: str,
    sent_at: datetime,
) -> None:
    """The provider accepted it: store its id (statuses that arrived first may rank higher)."""
    await conn.execute(
        "UPDATE messages SET provider_message_id = %s, sent_at = %s,"
        f" status = CASE WHEN status_rank > {STATUS_RANK['sent']} THEN status ELSE 'sent' END,"
        f" status_rank = greatest(status_rank, {STATUS_RANK['sent']})"
        " WHERE id = %s AND workspace_id = %s",
        (provider_message_id, sent_at, message_id, workspace_id),
    )


async def mark_failed(
    conn: Conn,
    *,
    workspace_id: UUID,
    message_id: UUID,
    status: str,
    error_code: str | None,
    error_message: str | None,
) -> None:
    """The send failed for good (``failed``) or was refused by policy (``blocked``)."""
    await conn.execute(
        "UPDATE messages SET status = %s, status_rank = %s, error_code = %s, error_message = %s"
        " WHERE id = %s AND workspace_id = %s",
        (status, STATUS_RANK[status], error_code, error_message, message_id, workspace_id),
    )


async def apply_status(
    conn: Conn,
    *,
    channel_id: UUID,
    workspace_id: UUID,
    provider_message_id: str,
    status: str,
    error_code: str | None,
    error_message: str | None,
) -> bool:
    """Move a message to a status only if it ranks higher than the one it has."""
    rank = STATUS_RANK.get(status, 0)
    cur = await conn.execute(
        "UPDATE messages SET status = %s, status_rank = %s,"
        " error_code = coalesce(%s, error_code), error_message = coalesce(%s, error_message)"
        " WHERE channel_id = %s AND workspace_id = %s AND provider_message_id = %s"
        " AND status_rank < %s",
        (
            status,
            rank,
            error_code,
            error_message,
            channel_id,
            workspace_id,
            provider_message_id,
            rank,
        ),
    )
    return cur.rowcount == 1


async def recent_bot_text(conn: Conn, *, conversation_id: UUID, text: str | None) -> bool:
    """Whether a bot reply with this text is still on its way (an echo that beat our ack)."""
    if not text:
        return False
    cur = await conn.execute(
        "SELECT 1 FROM messages WHERE conversation_id = %s AND direction = 'out'"
        " AND author = 'bot' AND text = %s AND status IN ('pending', 'sending', 'sent')"
        " AND created_at > now() - interval '2 minutes' LIMIT 1",
        (conversation_id, text),
    )
    return await cur.fetchone() is not None


async def history(
    conn: Conn,
    *,
    workspace_id: UUID,
    conversation_id: UUID,
    before_message: UUID,
    limit: int = 40,
) -> list[Row]:
    """The conversation's latest text messages before a given message, oldest first."""
    cur = await conn.execute(
        "SELECT direction, author, text, created_at FROM ("
        " SELECT direction, author, text, created_at, id FROM messages"
        " WHERE conversation_id = %s AND workspace_id = %s"
        " AND created_at < (SELECT created_at FROM messages WHERE id = %s)"
        " AND text IS NOT NULL AND status NOT IN ('failed', 'blocked')"
        " ORDER BY created_at DESC, id DESC LIMIT %s) h ORDER BY created_at, id",
        (conversation_id, workspace_id, before_message, limit),
    )
    return await cur.fetchall()
