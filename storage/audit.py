"""The audit log: who did what to which object, and when."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
_COLS = "id, actor, action, object_type, object_id, created_at, details"


async def write_audit(
    conn: Conn,
    *,
    workspace_id: UUID,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | UUID | None,
    details: dict[str, Any] | None = None,
    event_key: str | None = None,
) -> None:
    """Append one row (stream rows pass ``event_key`` so that a replay writes once)."""
    await conn.execute(
        "INSERT INTO audit_log (workspace_id, actor, action, object_type, object_id, details,"
        " event_key) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            workspace_id,
            actor,
            action,
            object_type,
            str(object_id) if object_id is not None else None,
            Jsonb(details or {}),
            event_key,
        ),
    )


async def list_audit(
    conn: Conn, *, workspace_id: UUID, limit: int, cursor: str | None, action: str | None = None
) -> tuple[list[Row], str | None]:
    """A workspace's audit rows, newest first."""
    cond, params = keyset(cursor, descending=True)
    extra, extra_params = ("AND action = %s", [action]) if action else ("", [])
    cur = await conn.execute(
        f"SELECT {_COLS} FROM audit_log WHERE workspace_id = %s AND {cond} {extra}"
        f" {order_by(descending=True)} LIMIT %s",
        [workspace_id, *params, *extra_params, limit + 1],
    )
    return page(await cur.fetchall(), limit)
