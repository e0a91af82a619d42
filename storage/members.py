"""Workspace members and their roles."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
_COLS = "id, workspace_id, email, role, created_at, updated_at"


async def add_member(conn: Conn, *, workspace_id: UUID, email: str, role: str) -> Row | None:
    """Add a member; None when the email is already a member of this workspace."""
    cur = await conn.execute(
        f"INSERT INTO memberships (workspace_id, email, role) VALUES (%s, %s, %s)"
        f" ON CONFLICT DO NOTHING RETURNING {_COLS}",
        (workspace_id, email, role),
    )
    return await cur.fetchone()


async def list_members(
    conn: Conn, *, workspace_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """Members, oldest first."""
    cond, params = keyset(cursor, descending=False)
    cur = await conn.execute(
        f"SELECT {_COLS} FROM memberships WHERE workspace_id = %s AND {cond}"
        f" {order_by(descending=False)} LIMIT %s",
        [workspace_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def update_member_role(
    conn: Conn, *, workspace_id: UUID, member_id: UUID, role: str
) -> Row | None:
    """Change a member's role."""
    cur = await conn.execute(
        f"UPDATE memberships SET role = %s WHERE id = %s AND workspace_id = %s RETURNING {_COLS}",
        (role, member_id, workspace_id),
    )
    return await cur.fetchone()


async def delete_member(conn: Conn, *, workspace_id: UUID, member_id: UUID) -> bool:
    """Remove a member; False when it is not in this workspace."""
    cur = await conn.execute(
        "DELETE FROM memberships WHERE id = %s AND workspace_id = %s", (member_id, workspace_id)
    )
    return cur.rowcount == 1
