"""Read, list and patch queries behind the REST views of conversations, messages and agents.

The pipeline's own queries live in ``conversations``, ``messages``, ``agents`` and
``runs``; these are the shapes the API shows (a conversation with its contact and
channel provider) and the filters it offers.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.errors import UniqueViolation

from storage.db import Conn
from storage.messages import STATUS_RANK
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]

_CONVERSATION = (
    "c.id, c.workspace_id, c.channel_id, c.contact_id, c.status, c.mode, c.human_until,"
    " c.last_message_at, c.last_inbound_at, c.created_at, c.updated_at,"
    " c.needs_attention, c.attention_reason, c.attention_at, c.attention_deadletter_id,"
    " ct.external_id AS contact_external_id, ct.name AS contact_name,"
    " ct.phone AS contact_phone, ch.provider AS channel_provider,"
    " ch.is_active AS channel_active"
)
_FROM = (
    "FROM conversations c JOIN contacts ct ON ct.id = c.contact_id"
    " JOIN channels ch ON ch.id = c.channel_id"
)
_MESSAGE = (
    "id, conversation_id, direction, author, type, text, status, error_code,"
    " provider_message_id, in_reply_to, trace_id, sent_at, created_at, updated_at"
)


class OpenConversationExists(Exception):
    """Reopening would make a second open conversation for the same contact and channel."""


async def missing_knowledge_bases(conn: Conn, *, workspace_id: UUID, ids: list[UUID]) -> list[UUID]:
    """The ids that are not knowledge bases of this workspace (another's count as missing)."""
    if not ids:
        return []
    cur = await conn.execute(
        "SELECT id FROM knowledge_bases WHERE workspace_id = %s AND id = ANY(%s)",
        (workspace_id, ids),
    )
    found = {r["id"] for r in await cur.fetchall()}
    return [i for i in ids if i not in found]


async def list_conversations(
    conn: Conn,
    *,
    workspace_id: UUID,
    limit: int,
    cursor: str | None,
    channel_id: UUID | None = None,
    status: str | None = None,
    mode: str | None = None,
    needs_attention: bool | None = None,
) -> tuple[list[Row], str | None]:
    """A workspace's conversations, newest first (by creation: a keyset that never moves)."""
    cond, params = keyset(cursor, descending=True, alias="c")
    filters: list[str] = []
    fparams: list[object] = []
    for column, value in (
        ("channel_id", channel_id),
        ("status", status),
        ("mode", mode),
        ("needs_attention", needs_attention),
    ):
        if value is not None:
            filters.append(f"AND c.{column} = %s")
            fparams.append(value)
    cur = await conn.execute(
        f"SELECT {_CONVERSATION} {_FROM} WHERE c.workspace_id = %s AND {cond}"
        f" {' '.join(filters)} {order_by(descending=True, alias='c')} LIMIT %s",
        [workspace_id, *params, *fparams, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def get_conversation(
    conn: Conn, *, workspace_id: UUID, conversation_id: UUID, for_update: bool = False
) -> Row | None:
    """One conversation with its contact (locked when a change depends on its status)."""
    lock = " FOR UPDATE OF c" if for_update else ""
    cur = await conn.execute(
        f"SELECT {_CONVERSATION} {_FROM} WHERE c.id = %s AND c.workspace_id = %s{lock}",
        (conversation_id, workspace_id),
    )
    return await cur.fetchone()


async def patch_conversation(
    conn: Conn, *, workspace_id: UUID, conversation_id: UUID, changes: dict[str, Any]
) -> bool:
    """Change mode and/or status; False when the conversation is not this workspace's.

    A mode set here clears ``human_until``: a human takeover from the API lasts until
    someone sets the mode back (only a takeover from the phone expires). Raises
    OpenConversationExists when reopening collides with a newer open conversation.
    """
    sets = [f"{k} = %s" for k in ("mode", "status") if k in changes]
    values = [changes[k] for k in ("mode", "status") if k in changes]
    if "mode" in changes:
        sets.append("human_until = NULL")
    if not sets:
        cur = await conn.execute(
            "SELECT 1 FROM conversations WHERE id = %s AND workspace_id = %s",
            (conversation_id, workspace_id),
        )
        return await cur.fetchone() is not None
    # A savepoint, so that the unique violation does not abort the caller's transaction.
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"UPDATE conversations SET {', '.join(sets)} WHERE id = %s AND workspace_id = %s",
                [*values, conversation_id, workspace_id],
            )
    except UniqueViolation as exc:
        raise OpenConversationExists(str(conversation_id)) from exc
    return cur.rowcount == 1


async def list_messages(
    conn: Conn, *, workspace_id: UUID, conversation_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """A conversation's messages, oldest first."""
    cond, params = keyset(cursor, descending=False)
    cur = await conn.execute(
        f"SELECT {_MESSAGE} FROM messages WHERE workspace_id = %s AND conversation_id = %s"
        f" AND {cond} {order_by(descending=False)} LIMIT %s",
        [workspace_id, conversation_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def fail_unsent(
    conn: Conn, *, workspace_id: UUID, message_id: UUID, error_code: str, error_message: str
) -> bool:
    """Mark an outbound message failed only if no send stage has claimed it yet.

    A produce that timed out may still have reached the broker; if the send stage already
    moved the row on, its outcome is the truth and must not be overwritten.
    """
    cur = await conn.execute(
        "UPDATE messages SET status = 'failed', status_rank = %s, error_code = %s,"
        " error_message = %s WHERE id = %s AND workspace_id = %s AND status = 'pending'",
        (STATUS_RANK["failed"], error_code, error_message, message_id, workspace_id),
    )
    return cur.rowcount == 1
