"""Workspaces and their plans."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
_COLS = "id, name, plan, is_active, fallback_text, created_at, updated_at"


async def create_workspace(conn: Conn, *, name: str, plan: str) -> Row:
    """Insert a workspace (the plan must exist: FK)."""
    cur = await conn.execute(
        f"INSERT INTO workspaces (name, plan) VALUES (%s, %s) RETURNING {_COLS}", (name, plan)
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def get_workspace(conn: Conn, *, workspace_id: UUID) -> Row | None:
    """One workspace by id."""
    cur = await conn.execute(f"SELECT {_COLS} FROM workspaces WHERE id = %s", (workspace_id,))
    return await cur.fetchone()


async def list_workspaces(
    conn: Conn, *, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """All workspaces, newest first (platform admin only)."""
    cond, params = keyset(cursor, descending=True)
    cur = await conn.execute(
        f"SELECT {_COLS} FROM workspaces WHERE {cond} {order_by(descending=True)} LIMIT %s",
        [*params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def update_workspace(
    conn: Conn, *, workspace_id: UUID, changes: dict[str, Any]
) -> Row | None:
    """Apply the given column changes (name, is_active, plan, fallback_text)."""
    allowed = {"name", "is_active", "plan", "fallback_text"}
    sets = [k for k in changes if k in allowed]
    if not sets:
        return await get_workspace(conn, workspace_id=workspace_id)
    assignments = ", ".join(f"{k} = %s" for k in sets)
    cur = await conn.execute(
        f"UPDATE workspaces SET {assignments} WHERE id = %s RETURNING {_COLS}",
        [*(changes[k] for k in sets), workspace_id],
    )
    return await cur.fetchone()


async def plan_exists(conn: Conn, *, code: str) -> bool:
    """Whether a plan code exists."""
    cur = await conn.execute("SELECT 1 FROM plans WHERE code = %s", (code,))
    return await cur.fetchone() is not None
