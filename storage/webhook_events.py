"""``webhook_events``: one row per first-seen provider item, the stream's source of truth."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage.db import Conn


async def insert_events(conn: Conn, rows: list[dict[str, Any]]) -> dict[str, tuple[UUID, bool]]:
    """Insert rows (workspace_id, channel_id, provider, idempotency_key, raw_payload,
    raw_headers, trace_id, received_at) in one statement, skipping keys that exist.

    Returns, per idempotency key, the row id and whether its events were already
    forwarded (``normalized`` set): an existing row that was never forwarded (a
    worker died in between) is forwarded again rather than lost.
    """
    if not rows:
        return {}
    cols = (
        "workspace_id",
        "channel_id",
        "provider",
        "idempotency_key",
        "raw_payload",
        "raw_headers",
        "trace_id",
        "received_at",
    )
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for r in rows:
        params += [
            r["workspace_id"],
            r["channel_id"],
            r["provider"],
            r["idempotency_key"],
            Jsonb(r["raw_payload"]),
            Jsonb(r["raw_headers"]),
            r["trace_id"],
            r["received_at"],
        ]
    await conn.execute(
        f"INSERT INTO webhook_events ({', '.join(cols)}) VALUES {values}"
        " ON CONFLICT (workspace_id, idempotency_key) DO NOTHING",
        params,
    )
    pairs = [(r["workspace_id"], r["idempotency_key"]) for r in rows]
    cur = await conn.execute(
        "SELECT id, workspace_id, idempotency_key, normalized IS NOT NULL AS forwarded"
        " FROM webhook_events WHERE (workspace_id, idempotency_key) IN"
        f" ({', '.join(['(%s, %s)'] * len(pairs))})",
        [x for p in pairs for x in p],
    )
    return {
        f"{row['workspace_id']}:{row['idempotency_key']}": (row["id"], row["forwarded"])
        for row in await cur.fetchall()
    }


async def mark_forwarded(conn: Conn, normalized: dict[UUID, Any]) -> None:
    """Record each row's normalized events: it has been forwarded downstream."""
    if not normalized:
        return
    await conn.execute(
        "UPDATE webhook_events AS w SET normalized = v.n::jsonb FROM (VALUES "
        + ", ".join(["(%s::uuid, %s)"] * len(normalized))
        + ") AS v(id, n) WHERE w.id = v.id",
        [x for item in normalized.items() for x in (item[0], Jsonb(item[1]))],
    )


async def count_events(conn: Conn, *, workspace_id: UUID) -> int:
    """How many webhook events a workspace has (tests, admin)."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM webhook_events WHERE workspace_id = %s", (workspace_id,)
    )
    return int((await cur.fetchone())["n"])
