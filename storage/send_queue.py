"""Deferred sends (``send_deferrals``): messages whose send waits, and the sweep that requeues them.

Every function takes a batch of (workspace_id, message_id) keys, or rows carrying them,
and matches on both, as ``storage.bulk`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage import messages as _messages
from storage.db import Conn

Row = dict[str, Any]
_PENDING = _messages.STATUS_RANK["pending"]


@dataclass(frozen=True)
class Deferral:
    """One message to send later."""

    workspace_id: UUID
    message_id: UUID
    channel_id: UUID
    conversation_id: UUID
    request: dict[str, Any]
    reason: str
    attempts: int
    not_before: datetime


async def state(conn: Conn, keys: Sequence[tuple[UUID, UUID]]) -> dict[UUID, Row]:
    """What the deferrals say about messages about to be sent, by message id.

    ``deferred``: the message has its own deferral (``requeued``: the sweep produced it
    again since it was deferred, ``attempts``: calls made so far, ``not_before``: when it
    is due). ``behind_until``: an
    earlier message of its conversation, outside this batch, is deferred until then (the
    latest such time). Only messages with something to say are returned.
    """
    if not keys:
        return {}
    ws, ids = [k[0] for k in keys], [k[1] for k in keys]
    cur = await conn.execute(
        "SELECT s.* FROM (SELECT m.id, d.message_id IS NOT NULL AS deferred,"
        " d.requeued_at IS NOT NULL AS requeued, coalesce(d.attempts, 0) AS attempts,"
        " d.not_before,"
        " (SELECT max(e.not_before) FROM send_deferrals e JOIN messages em ON em.id = e.message_id"
        "  WHERE e.conversation_id = m.conversation_id AND e.workspace_id = m.workspace_id"
        "  AND e.message_id <> ALL(%(ids)s) AND (em.created_at, em.id) < (m.created_at, m.id)"
        " ) AS behind_until"
        " FROM messages m JOIN unnest(%(ws)s::uuid[], %(ids)s::uuid[]) AS v(w, id)"
        " ON m.id = v.id AND m.workspace_id = v.w"
        " LEFT JOIN send_deferrals d ON d.message_id = m.id) s"
        " WHERE s.deferred OR s.behind_until IS NOT NULL",
        {"ws": ws, "ids": ids},
    )
    return {r["id"]: r for r in await cur.fetchall()}


async def defer(conn: Conn, rows: Sequence[Deferral], *, release_claims: bool = True) -> None:
    """Record deferrals and put their messages back to ``pending`` (unless
    ``release_claims`` is false: a message another worker still holds stays its own).

    A conversation's other deferred messages never become due before the one deferred
    here (they go out after it): their ``not_before`` is raised to at least its own.
    """
    if not rows:
        return
    cols = (
        [r.workspace_id for r in rows],
        [r.message_id for r in rows],
        [r.channel_id for r in rows],
        [r.conversation_id for r in rows],
        [Jsonb(r.request) for r in rows],
        [r.reason for r in rows],
        [r.attempts for r in rows],
        [r.not_before for r in rows],
    )
    await conn.execute(
        "INSERT INTO send_deferrals AS d (workspace_id, message_id, channel_id, conversation_id,"
        " request, reason, attempts, not_before)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[], %s::jsonb[],"
        " %s::text[], %s::int[], %s::timestamptz[])"
        " ON CONFLICT (message_id) DO UPDATE SET request = excluded.request,"
        " reason = excluded.reason, attempts = excluded.attempts,"
        " not_before = excluded.not_before, requeued_at = NULL",
        cols,
    )
    await conn.execute(
        "UPDATE send_deferrals d SET not_before = v.nb"
        " FROM (SELECT w, c, max(nb) AS nb FROM unnest(%s::uuid[], %s::uuid[],"
        " %s::timestamptz[]) AS u(w, c, nb) GROUP BY w, c) AS v"
        " WHERE d.workspace_id = v.w AND d.conversation_id = v.c AND d.not_before < v.nb",
        (cols[0], cols[3], cols[7]),
    )
    if release_claims:
        await release(conn, [(r.workspace_id, r.message_id) for r in rows])


async def release(conn: Conn, keys: Sequence[tuple[UUID, UUID]]) -> None:
    """Claimed messages that were not sent go back from ``sending`` to ``pending``."""
    if not keys:
        return
    await conn.execute(
        f"UPDATE messages m SET status = 'pending', status_rank = {_PENDING}"
        " FROM unnest(%s::uuid[], %s::uuid[]) AS v(w, id)"
        " WHERE m.id = v.id AND m.workspace_id = v.w AND m.status = 'sending'"
        " AND m.provider_message_id IS NULL",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )


async def clear(conn: Conn, keys: Sequence[tuple[UUID, UUID]]) -> None:
    """Forget the deferrals of messages that are done (sent, failed or refused)."""
    if not keys:
        return
    await conn.execute(
        "DELETE FROM send_deferrals d USING unnest(%s::uuid[], %s::uuid[]) AS v(w, id)"
        " WHERE d.message_id = v.id AND d.workspace_id = v.w",
        ([k[0] for k in keys], [k[1] for k in keys]),
    )


async def take_due(conn: Conn, *, limit: int, lease_seconds: float) -> list[Row]:
    """Deferrals to produce again now: every deferred message of each conversation with a
    due one, oldest message first, marked requeued (a requeue older than the lease is
    taken again: the record it produced may have been lost). Rows another sweep holds are
    skipped. Deferrals of messages that are done meanwhile (sent by another worker that
    held them) are dropped. Call it inside a transaction."""
    await conn.execute(
        "DELETE FROM send_deferrals d USING messages m WHERE m.id = d.message_id"
        " AND (m.status NOT IN ('pending', 'sending') OR m.provider_message_id IS NOT NULL)"
    )
    cur = await conn.execute(
        "WITH due AS (SELECT DISTINCT workspace_id, conversation_id FROM ("
        "  SELECT workspace_id, conversation_id FROM send_deferrals"
        "  WHERE not_before <= now() AND (requeued_at IS NULL"
        "   OR requeued_at < now() - make_interval(secs => %(lease)s))"
        "  ORDER BY not_before LIMIT %(limit)s FOR UPDATE SKIP LOCKED) s),"
        " taken AS (SELECT d.message_id FROM send_deferrals d"
        "  JOIN due ON due.workspace_id = d.workspace_id"
        "  AND due.conversation_id = d.conversation_id FOR UPDATE OF d SKIP LOCKED)"
        " UPDATE send_deferrals d SET requeued_at = now() FROM taken, messages m"
        " WHERE d.message_id = taken.message_id AND m.id = d.message_id"
        " RETURNING d.message_id, d.request, m.created_at",
        {"lease": lease_seconds, "limit": limit},
    )
    rows = await cur.fetchall()
    rows.sort(key=lambda r: (r["created_at"], r["message_id"]))
    return rows
