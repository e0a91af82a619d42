"""Agents and their versions: drafts are editable, a published version is immutable."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
_AGENT = "id, workspace_id, name, description, published_version_id, created_at, updated_at"
_VERSION = (
    "id, workspace_id, agent_id, number, status, system_prompt, model, temperature, max_tokens,"
    " history_tokens, fallback_text, knowledge_base_ids, published_at, created_at, updated_at"
)
VERSION_FIELDS = (
    "system_prompt",
    "model",
    "temperature",
    "max_tokens",
    "history_tokens",
    "fallback_text",
    "knowledge_base_ids",
)


async def agent_exists(conn: Conn, *, workspace_id: UUID, agent_id: UUID) -> bool:
    """Whether the agent exists in this workspace."""
    cur = await conn.execute(
        "SELECT 1 FROM agents WHERE id = %s AND workspace_id = %s", (agent_id, workspace_id)
    )
    return await cur.fetchone() is not None


async def create_agent(
    conn: Conn, *, workspace_id: UUID, name: str, description: str | None
) -> Row:
    """Insert an agent."""
    cur = await conn.execute(
        f"INSERT INTO agents (workspace_id, name, description) VALUES (%s, %s, %s)"
        f" RETURNING {_AGENT}",
        (workspace_id, name, description),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def get_agent(conn: Conn, *, workspace_id: UUID, agent_id: UUID) -> Row | None:
    """One agent."""
    cur = await conn.execute(
        f"SELECT {_AGENT} FROM agents WHERE id = %s AND workspace_id = %s",
        (agent_id, workspace_id),
    )
    return await cur.fetchone()


async def list_agents(
    conn: Conn, *, workspace_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """A workspace's agents, oldest first."""
    cond, params = keyset(cursor, descending=False)
    cur = await conn.execute(
        f"SELECT {_AGENT} FROM agents WHERE workspace_id = %s AND {cond}"
        f" {order_by(descending=False)} LIMIT %s",
        [workspace_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def update_agent(
    conn: Conn, *, workspace_id: UUID, agent_id: UUID, changes: dict[str, Any]
) -> Row | None:
    """Rename or describe an agent."""
    sets = [k for k in changes if k in ("name", "description")]
    if not sets:
        return await get_agent(conn, workspace_id=workspace_id, agent_id=agent_id)
    cur = await conn.execute(
        f"UPDATE agents SET {', '.join(f'{k} = %s' for k in sets)}"
        f" WHERE id = %s AND workspace_id = %s RETURNING {_AGENT}",
        [*(changes[k] for k in sets), agent_id, workspace_id],
    )
    return await cur.fetchone()


async def delete_agent(conn: Conn, *, workspace_id: UUID, agent_id: UUID) -> bool:
    """Delete an agent (channels bound to it lose their agent)."""
    cur = await conn.execute(
        "DELETE FROM agents WHERE id = %s AND workspace_id = %s", (agent_id, workspace_id)
    )
    return cur.rowcount == 1


async def create_version(
    conn: Conn, *, workspace_id: UUID, agent_id: UUID, fields: dict[str, Any]
) -> Row:
    """Insert the next draft version (numbers are per agent, from 1)."""
    await conn.execute("SELECT 1 FROM agents WHERE id = %s FOR UPDATE", (agent_id,))
    cols = [k for k in VERSION_FIELDS if k in fields]
    placeholders = ", ".join(["%s"] * len(cols))
    cur = await conn.execute(
        f"INSERT INTO agent_versions (workspace_id, agent_id, number"
        f"{''.join(', ' + c for c in cols)})"
        f" SELECT %s, %s, coalesce(max(number), 0) + 1{', ' if cols else ''}{placeholders}"
        f" FROM agent_versions WHERE agent_id = %s RETURNING {_VERSION}",
        [workspace_id, agent_id, *(fields[c] for c in cols), agent_id],
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def get_version(
    conn: Conn, *, workspace_id: UUID, agent_id: UUID, version_id: UUID
) -> Row | None:
    """One version of an agent."""
    cur = await conn.execute(
        f"SELECT {_VERSION} FROM agent_versions WHERE id = %s AND agent_id = %s"
        " AND workspace_id = %s",
        (version_id, agent_id, workspace_id),
    )
    return await cur.fetchone()


async def list_versions(
    conn: Conn, *, workspace_id: UUID, agent_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """An agent's versions, oldest first."""
    cond, params = keyset(cursor, descending=False)
    cur = await conn.execute(
        f"SELECT {_VERSION} FROM agent_versions WHERE workspace_id = %s AND agent_id = %s"
        f" AND {cond} {order_by(descending=False)} LIMIT %s",
        [workspace_id, agent_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def update_draft(
    conn: Conn, *, workspace_id: UUID, version_id: UUID, fields: dict[str, Any]
) -> Row | None:
    """Change a draft; None when it is not a draft (published versions are immutable)."""
    cols = [k for k in VERSION_FIELDS if k in fields]
    if not cols:
        cur = await conn.execute(
            f"SELECT {_VERSION} FROM agent_versions WHERE id = %s AND workspace_id = %s"
            " AND status = 'draft'",
            (version_id, workspace_id),
        )
        return await cur.fetchone()
    cur = await conn.execute(
        f"UPDATE agent_versions SET {', '.join(f'{c} = %s' for c in cols)}"
        f" WHERE id = %s AND workspace_id = %s AND status = 'draft' RETURNING {_VERSION}",
        [*(fields[c] for c in cols), version_id, workspace_id],
    )
    return await cur.fetchone()


async def publish_version(
    conn: Conn, *, workspace_id: UUID, agent_id: UUID, version_id: UUID
) -> Row | None:
    """Freeze a version and make it the agent's published one."""
    cur = await conn.execute(
        f"UPDATE agent_versions SET status = 'published', published_at = coalesce(published_at,"
        f" now()) WHERE id = %s AND agent_id = %s AND workspace_id = %s RETURNING {_VERSION}",
        (version_id, agent_id, workspace_id),
    )
    row = await cur.fetchone()
    if row is not None:
        await conn.execute(
            "UPDATE agents SET published_version_id = %s WHERE id = %s AND workspace_id = %s",
            (version_id, agent_id, workspace_id),
        )
    return row


async def published_version_for_agent(
    conn: Conn, *, workspace_id: UUID, agent_id: UUID
) -> Row | None:
    """The published version the pipeline answers with."""
    cur = await conn.execute(
        f"SELECT {', '.join('v.' + c.strip() for c in _VERSION.split(','))}"
        " FROM agents a JOIN agent_versions v ON v.id = a.published_version_id"
        " WHERE a.id = %s AND a.workspace_id = %s",
        (agent_id, workspace_id),
    )
    return await cur.fetchone()
