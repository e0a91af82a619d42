"""Dead letters kept in PostgreSQL, and the conversations they leave needing a person.

One row per failed record (``event_key``): a dead letter delivered twice, or a record that
fails again after a replay, updates that row instead of adding one. The REST API reads a
workspace's rows; the operator's CLI reads every workspace's (``workspace_id=None``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from storage.db import Conn
from storage.messages import STATUS_RANK
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
COLS = (
    "id, workspace_id, channel_id, conversation_id, event_key, stage, reason, error_code,"
    " trace_id, payload, failures, failed_at, replay_count, replayed_at, created_at, updated_at"
)


async def record(
    conn: Conn,
    *,
    event_key: str,
    stage: str,
    reason: str,
    error_code: str | None,
    trace_id: str,
    workspace_id: UUID | None,
    channel_id: UUID | None,
    conversation_id: UUID | None,
    payload: str,
    failed_at: datetime,
) -> tuple[Row | None, bool]:
    """Keep a dead letter: (the row, True) when it is new, (the row, False) when the record
    failed again (a later ``failed_at``), (None, False) for a repeat of a dead letter
    already kept. Ids of rows that do not exist (a deleted workspace, channel or
    conversation; a payload naming none of ours) are stored as NULL."""
    cur = await conn.execute(
        "INSERT INTO deadletters (event_key, stage, reason, error_code, trace_id, workspace_id,"
        " channel_id, conversation_id, payload, failed_at)"
        " SELECT %s, %s, %s, %s, %s,"
        " (SELECT id FROM workspaces WHERE id = %s),"
        " (SELECT id FROM channels WHERE id = %s AND workspace_id = %s),"
        " (SELECT id FROM conversations WHERE id = %s AND workspace_id = %s),"
        " %s, %s"
        " ON CONFLICT (event_key) DO UPDATE SET reason = excluded.reason,"
        " error_code = excluded.error_code, trace_id = excluded.trace_id,"
        " failures = deadletters.failures + 1, failed_at = excluded.failed_at,"
        " conversation_id = coalesce(excluded.conversation_id, deadletters.conversation_id)"
        " WHERE deadletters.failed_at < excluded.failed_at"
        f" RETURNING {COLS}, (xmax = 0) AS inserted",
        (
            event_key,
            stage,
            reason,
            error_code,
            trace_id,
            workspace_id,
            channel_id,
            workspace_id,
            conversation_id,
            workspace_id,
            payload.replace("\x00", "\ufffd"),  # PostgreSQL text cannot hold NUL
            failed_at,
        ),
    )
    row = await cur.fetchone()
    if row is None:
        return None, False
    return row, bool(row.pop("inserted"))


async def find_conversation(
    conn: Conn, *, workspace_id: UUID, channel_id: UUID, contact_external_id: str
) -> UUID | None:
    """The contact's latest conversation on the channel (by any of its identifiers)."""
    cur = await conn.execute(
        "SELECT c.id FROM conversations c JOIN contacts ct ON ct.id = c.contact_id"
        " WHERE c.workspace_id = %s AND c.channel_id = %s"
        " AND (ct.external_id = %s OR %s = ANY(ct.alt_ids))"
        " ORDER BY (c.status = 'open') DESC, c.created_at DESC LIMIT 1",
        (workspace_id, channel_id, contact_external_id, contact_external_id),
    )
    row = await cur.fetchone()
    return row["id"] if row else None


async def flag_conversation(
    conn: Conn, *, workspace_id: UUID, conversation_id: UUID, reason: str, deadletter_id: UUID
) -> bool | None:
    """Mark a conversation as needing a person; True when it did not before, None when the
    conversation is not the workspace's."""
    cur = await conn.execute(
        "UPDATE conversations c SET needs_attention = true, attention_reason = %s,"
        " attention_at = now(), attention_deadletter_id = %s"
        " FROM (SELECT id, needs_attention FROM conversations"
        "       WHERE id = %s AND workspace_id = %s FOR UPDATE) before"
        " WHERE c.id = before.id RETURNING before.needs_attention AS was",
        (reason, deadletter_id, conversation_id, workspace_id),
    )
    row = await cur.fetchone()
    return None if row is None else not row["was"]


async def clear_attention(
    conn: Conn,
    *,
    workspace_id: UUID,
    conversation_id: UUID | None = None,
    deadletter_id: UUID | None = None,
) -> int:
    """Clear a conversation's flag: by its id (a person took it), or only where this dead
    letter set it (its replay)."""
    if conversation_id is None and deadletter_id is None:
        raise ValueError("name the conversation or the dead letter")
    if conversation_id is not None:
        column, value = "id", conversation_id
    else:
        column, value = "attention_deadletter_id", deadletter_id
    cur = await conn.execute(
        "UPDATE conversations SET needs_attention = false, attention_reason = NULL,"
        " attention_at = NULL, attention_deadletter_id = NULL"
        f" WHERE workspace_id = %s AND {column} = %s AND needs_attention",
        (workspace_id, value),
    )
    return cur.rowcount


async def get(conn: Conn, *, deadletter_id: UUID, workspace_id: UUID | None) -> Row | None:
    """One dead letter: of this workspace, or of any (``None``: the operator's CLI)."""
    if workspace_id is None:
        cur = await conn.execute(f"SELECT {COLS} FROM deadletters WHERE id = %s", (deadletter_id,))
    else:
        cur = await conn.execute(
            f"SELECT {COLS} FROM deadletters WHERE id = %s AND workspace_id = %s",
            (deadletter_id, workspace_id),
        )
    return await cur.fetchone()


async def list_deadletters(
    conn: Conn,
    *,
    workspace_id: UUID | None,
    limit: int,
    cursor: str | None,
    stage: str | None = None,
    since: datetime | None = None,
    all_workspaces: bool = False,
) -> tuple[list[Row], str | None]:
    """Dead letters, newest first: a workspace's, or every one (``all_workspaces``, for the
    operator; ``workspace_id=None`` without it never matches a row)."""
    cond, params = keyset(cursor, descending=True)
    filters: list[str] = []
    values: list[Any] = []
    if not all_workspaces or workspace_id is not None:
        filters.append("workspace_id = %s")
        values.append(workspace_id)
    if stage is not None:
        filters.append("stage = %s")
        values.append(stage)
    if since is not None:
        filters.append("failed_at >= %s")
        values.append(since)
    where = " AND ".join([*filters, cond]) if filters else cond
    cur = await conn.execute(
        f"SELECT {COLS} FROM deadletters WHERE {where} {order_by(descending=True)} LIMIT %s",
        [*values, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def mark_replayed(conn: Conn, *, deadletter_id: UUID) -> Row:
    """Count a replay."""
    cur = await conn.execute(
        "UPDATE deadletters SET replay_count = replay_count + 1, replayed_at = now()"
        f" WHERE id = %s RETURNING {COLS}",
        (deadletter_id,),
    )
    row = await cur.fetchone()
    assert row is not None, "a dead letter is never deleted alone"
    return row


async def rearm_send(conn: Conn, *, workspace_id: UUID, message_id: UUID) -> bool:
    """Put an outbound message that failed before any provider took it back to ``pending``,
    so that the send stage may deliver it once more (its claim takes only pending rows)."""
    cur = await conn.execute(
        "UPDATE messages SET status = 'pending', status_rank = %s, error_code = NULL,"
        " error_message = NULL WHERE id = %s AND workspace_id = %s AND direction = 'out'"
        " AND status = 'failed' AND provider_message_id IS NULL",
        (STATUS_RANK["pending"], message_id, workspace_id),
    )
    return cur.rowcount == 1


async def awaiting_replay(
    conn: Conn, *, workspace_id: UUID, stage: str | None = None, limit: int = 10_000
) -> list[Row]:
    """A workspace's dead letters not replayed since they last failed, oldest first."""
    extra, values = ("AND stage = %s", [stage]) if stage else ("", [])
    cur = await conn.execute(
        f"SELECT {COLS} FROM deadletters WHERE workspace_id = %s {extra}"
        " AND (replayed_at IS NULL OR replayed_at < failed_at)"
        " ORDER BY created_at, id LIMIT %s",
        [workspace_id, *values, limit],
    )
    return await cur.fetchall()
