"""``webhook_events``: one row per first-seen provider item, the stream's source of truth."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

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

    def column(name: str) -> list[Any]:
        return [r[name] for r in rows]

    # Arrays through unnest (one statement text whatever the batch size, so it is parsed
    # and prepared once); the JSON documents as one JSON array each, encoded in one call.
    cur = await conn.execute(
        "INSERT INTO webhook_events (workspace_id, channel_id, provider, idempotency_key,"
        " raw_payload, raw_headers, trace_id, received_at)"
        " SELECT v.w, v.ch, v.p, v.k, j.payload, h.headers, v.tr, v.at"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[],"
        " %s::timestamptz[]) WITH ORDINALITY AS v(w, ch, p, k, tr, at, n)"
        " JOIN jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS j(payload, n) ON j.n = v.n"
        " JOIN jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS h(headers, n) ON h.n = v.n"
        " ORDER BY v.n ON CONFLICT (workspace_id, idempotency_key) DO NOTHING"
        " RETURNING id, workspace_id, idempotency_key, false AS forwarded",
        (
            column("workspace_id"),
            column("channel_id"),
            column("provider"),
            column("idempotency_key"),
            column("trace_id"),
            column("received_at"),
            json.dumps(column("raw_payload")),
            json.dumps(column("raw_headers")),
        ),
    )
    found = {f"{r['workspace_id']}:{r['idempotency_key']}": r for r in await cur.fetchall()}
    missing = [r for r in rows if f"{r['workspace_id']}:{r['idempotency_key']}" not in found]
    if missing:  # delivered before: the row stored then (ANY keeps to the unique index)
        cur = await conn.execute(
            "SELECT id, workspace_id, idempotency_key, normalized IS NOT NULL AS forwarded"
            " FROM webhook_events WHERE workspace_id = ANY(%s::uuid[])"
            " AND idempotency_key = ANY(%s::text[])",
            (
                list({r["workspace_id"] for r in missing}),
                [r["idempotency_key"] for r in missing],
            ),
        )
        found.update(
            {f"{r['workspace_id']}:{r['idempotency_key']}": r for r in await cur.fetchall()}
        )
    return {key: (r["id"], r["forwarded"]) for key, r in found.items()}


async def mark_forwarded(conn: Conn, normalized: dict[UUID, Any]) -> None:
    """Record each row's normalized events: it has been forwarded downstream."""
    if not normalized:
        return
    await conn.execute(
        "UPDATE webhook_events AS w SET normalized = v.doc FROM ("
        "SELECT i.id, j.doc FROM unnest(%s::uuid[]) WITH ORDINALITY AS i(id, n)"
        " JOIN jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS j(doc, n) ON j.n = i.n"
        ") AS v WHERE w.id = v.id",
        (list(normalized), json.dumps(list(normalized.values()))),
    )


async def count_events(conn: Conn, *, workspace_id: UUID) -> int:
    """How many webhook events a workspace has (tests, admin)."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM webhook_events WHERE workspace_id = %s", (workspace_id,)
    )
    return int((await cur.fetchone())["n"])
