"""What the worker's tables mirror, read back from PostgreSQL to seed them (streams/seed.py).

The stream keeps its counters in Faust tables whose changelogs live on the broker; these
queries give, per workspace, the same figures from the database: the usage counters
(``usage_records``), the statistics document (``workspace_stats``, written here by the usage
agent) and the month's quota counters (from ``agent_runs``, one row per message that reached
the agent).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage.db import Conn
from storage.usage import KINDS


async def workspace_ids(conn: Conn) -> list[UUID]:
    """Every workspace's id (the caller keeps those of its partitions)."""
    cur = await conn.execute("SELECT id FROM workspaces")
    return [r["id"] for r in await cur.fetchall()]


async def usage_days(conn: Conn, *, workspace_ids: Sequence[UUID]) -> list[dict[str, Any]]:
    """Every ``usage_records`` row of these workspaces: the usage table's counters."""
    cur = await conn.execute(
        f"SELECT workspace_id, day, {', '.join(KINDS)} FROM usage_records"
        " WHERE workspace_id = ANY(%s)",
        (list(workspace_ids),),
    )
    return await cur.fetchall()


async def month_runs(
    conn: Conn, *, workspace_ids: Sequence[UUID], start: datetime, end: datetime
) -> dict[UUID, tuple[int, int]]:
    """Per workspace, between ``start`` and ``end``: the messages that reached the agent (one
    run each, refusals included) and the tokens of its LLM calls (the offline responder's
    are not LLM spend) — the quota gate's two counters."""
    cur = await conn.execute(
        "SELECT workspace_id, count(*) AS answered,"
        " coalesce(sum(prompt_tokens + completion_tokens)"
        "   FILTER (WHERE outcome <> 'offline'), 0) AS tokens"
        " FROM agent_runs WHERE workspace_id = ANY(%s) AND created_at >= %s AND created_at < %s"
        " GROUP BY workspace_id",
        (list(workspace_ids), start, end),
    )
    return {r["workspace_id"]: (int(r["answered"]), int(r["tokens"])) for r in await cur.fetchall()}


async def stats_docs(conn: Conn, *, workspace_ids: Sequence[UUID]) -> dict[UUID, dict]:
    """The last statistics document written for each of these workspaces."""
    cur = await conn.execute(
        "SELECT workspace_id, stats FROM workspace_stats WHERE workspace_id = ANY(%s)",
        (list(workspace_ids),),
    )
    return {r["workspace_id"]: r["stats"] for r in await cur.fetchall()}


async def set_stats(conn: Conn, docs: Sequence[tuple[UUID, dict, int]]) -> None:
    """Write (workspace, document, events folded) rows; a document that has folded fewer
    events than the stored one changes nothing (a worker with an older table, mid-rebalance)."""
    if not docs:
        return
    await conn.execute(
        "INSERT INTO workspace_stats (workspace_id, stats, folded)"
        " SELECT * FROM unnest(%s::uuid[], %s::jsonb[], %s::bigint[])"
        " ON CONFLICT (workspace_id) DO UPDATE"
        " SET stats = EXCLUDED.stats, folded = EXCLUDED.folded"
        " WHERE workspace_stats.folded < EXCLUDED.folded",
        (
            [d[0] for d in docs],
            [Jsonb(d[1]) for d in docs],
            [d[2] for d in docs],
        ),
    )
