"""Monthly limits: the workspace's plan, overridden per metric by ``quotas`` rows."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from storage.db import Conn

METRICS = ("inbound_messages", "llm_tokens")


async def monthly_limits(conn: Conn, *, workspace_id: UUID) -> dict[str, Any]:
    """``{"inbound_messages": n | None, "llm_tokens": n | None, "plan": code}`` (None: unlimited).

    A ``quotas`` row overrides the plan's limit for its metric, NULL meaning unlimited.
    """
    cur = await conn.execute(
        "SELECT w.plan,"
        " CASE WHEN qi.id IS NULL THEN p.monthly_inbound_messages ELSE qi.monthly_limit END"
        "   AS inbound_messages,"
        " CASE WHEN qt.id IS NULL THEN p.monthly_llm_tokens ELSE qt.monthly_limit END"
        "   AS llm_tokens"
        " FROM workspaces w JOIN plans p ON p.code = w.plan"
        " LEFT JOIN quotas qi ON qi.workspace_id = w.id AND qi.metric = 'inbound_messages'"
        " LEFT JOIN quotas qt ON qt.workspace_id = w.id AND qt.metric = 'llm_tokens'"
        " WHERE w.id = %s",
        (workspace_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return {"plan": None, "inbound_messages": None, "llm_tokens": None}
    return dict(row)


async def set_override(
    conn: Conn, *, workspace_id: UUID, metric: str, monthly_limit: int | None
) -> None:
    """Override the plan's limit for one metric (``monthly_limit`` None: unlimited)."""
    await conn.execute(
        "INSERT INTO quotas (workspace_id, metric, monthly_limit) VALUES (%s, %s, %s)"
        " ON CONFLICT (workspace_id, metric) DO UPDATE SET monthly_limit = EXCLUDED.monthly_limit",
        (workspace_id, metric, monthly_limit),
    )


async def clear_override(conn: Conn, *, workspace_id: UUID, metric: str) -> None:
    """Back to the plan's limit for one metric."""
    await conn.execute(
        "DELETE FROM quotas WHERE workspace_id = %s AND metric = %s", (workspace_id, metric)
    )
