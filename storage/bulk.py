"""Multi-row versions of the pipeline's writes: one statement for a whole stream batch.

The stream stages handle up to a few hundred events per batch; a round trip per event
per statement was most of a worker's time. Each function here takes the rows of a batch
and does with one statement what ``storage.contacts``, ``conversations`` and
``messages`` do for one row, with the same conflict rules. Rows of several workspaces
may share a batch: every statement matches on the workspace id of each row.

Arrays go in through ``unnest`` (one statement text whatever the batch size, so
PostgreSQL prepares it once); ragged values (a contact's ``alt_ids``) travel as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage import contacts as _contacts
from storage import conversations as _conversations
from storage import messages as _messages
from storage import runs as _runs
from storage.db import Conn

Row = dict[str, Any]
_CONTACT_COLS = _contacts._COLS
_CONV_COLS = _conversations.COLS
_MSG_COLS = _messages.COLS
_RUN_COLS = _runs.COLS


def _qualified(alias: str, cols: str) -> str:
    """``a, b`` → ``x.a, x.b``: a column list for a query that joins its table."""
    return ", ".join(f"{alias}.{c.strip()}" for c in cols.split(","))


_CONV_C = _qualified("c", _CONV_COLS)
_MSG_M = _qualified("m", _MSG_COLS)
_RUN_R = _qualified("r", _RUN_COLS)
_SENDING = _messages.STATUS_RANK["sending"]
_SENT = _messages.STATUS_RANK["sent"]

# Rows inserted by one statement share now(); history orders messages by created_at, so
# each row gets the clock plus its position (µs) and a conversation's order survives.
_ORDERED_NOW = "clock_timestamp() + (v.n - 1) * interval '1 microsecond'"


def _pairs(keys: Sequence[tuple[UUID, Any]]) -> tuple[list[UUID], list[Any]]:
    return [k[0] for k in keys], [k[1] for k in keys]


async def find_contacts(
    conn: Conn, *, workspace_id: UUID, channel_id: UUID, ids: list[str]
) -> list[Row]:
    """The channel's contacts named by any of ``ids``, oldest first, locked for update."""
    cur = await conn.execute(
        f"SELECT {_CONTACT_COLS} FROM contacts WHERE channel_id = %s AND workspace_id = %s"
        " AND (external_id = ANY(%s) OR alt_ids && %s) ORDER BY created_at, id FOR UPDATE",
        (channel_id, workspace_id, ids, ids),
    )
    return await cur.fetchall()


async def insert_contacts(
    conn: Conn, *, workspace_id: UUID, channel_id: UUID, rows: list[Row]
) -> list[Row]:
    """Create contacts (external_id, alt_ids, phone, name); one created meanwhile by
    another worker under the same id is merged as ``upsert_contact`` does."""
    if not rows:
        return []
    cur = await conn.execute(
        "INSERT INTO contacts (workspace_id, channel_id, external_id, alt_ids, phone, name)"
        " SELECT %s, %s, v.e, ARRAY(SELECT jsonb_array_elements_text(v.a)), v.p, v.nm"
        " FROM unnest(%s::text[], %s::jsonb[], %s::text[], %s::text[]) AS v(e, a, p, nm)"
        " ON CONFLICT (channel_id, external_id) DO UPDATE SET"
        " name = coalesce(EXCLUDED.name, contacts.name),"
        f" phone = coalesce(EXCLUDED.phone, contacts.phone) RETURNING {_CONTACT_COLS}",
        (
            workspace_id,
            channel_id,
            [r["external_id"] for r in rows],
            [Jsonb(list(r["alt_ids"])) for r in rows],
            [r["phone"] for r in rows],
            [r["name"] for r in rows],
        ),
    )
    return await cur.fetchall()


async def update_contacts(conn: Conn, *, workspace_id: UUID, rows: list[Row]) -> None:
    """Store merged identifiers, names and phones of existing contacts (id, alt_ids,
    phone, name; an absent name or phone keeps the stored one)."""
    if not rows:
        return
    await conn.execute(
        "UPDATE contacts c SET alt_ids = ARRAY(SELECT jsonb_array_elements_text(v.a)),"
        " name = coalesce(v.nm, c.name), phone = coalesce(v.p, c.phone)"
        " FROM unnest(%s::uuid[], %s::jsonb[], %s::text[], %s::text[]) AS v(id, a, p, nm)"
        " WHERE c.id = v.id AND c.workspace_id = %s",
        (
            [r["id"] for r in rows],
            [Jsonb(list(r["alt_ids"])) for r in rows],
            [r["phone"] for r in rows],
            [r["name"] for r in rows],
            workspace_id,
        ),
    )


async def open_conversations(
    conn: Conn, keys: Sequence[tuple[UUID, UUID, UUID]]
) -> dict[UUID, Row]:
    """Per contact id: its open conversation on the channel, opened when there is none.

    ``keys`` are (workspace_id, channel_id, contact_id); the rows are locked for update,
    as ``conversations.open_conversation`` locks its one. ``opened`` is true on a row this
    call opened.
    """
    if not keys:
        return {}
    ws = [k[0] for k in keys]
    chs = [k[1] for k in keys]
    cts = [k[2] for k in keys]
    cur = await conn.execute(
        f"SELECT {_CONV_C}"
        " FROM conversations c JOIN unnest(%s::uuid[], %s::uuid[], %s::uuid[]) AS v(w, ch, ct)"
        " ON c.workspace_id = v.w AND c.channel_id = v.ch AND c.contact_id = v.ct"
        " WHERE c.status = 'open' FOR UPDATE OF c",
        (ws, chs, cts),
    )
    found = {r["contact_id"]: {**r, "opened": False} for r in await cur.fetchall()}
    missing = [k for k in keys if k[2] not in found]
    if missing:
        cur = await conn.execute(
            "INSERT INTO conversations (workspace_id, channel_id, contact_id)"
            " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[])"
            " ON CONFLICT (channel_id, contact_id) WHERE status = 'open'"
            f" DO UPDATE SET updated_at = now() RETURNING {_CONV_COLS}, (xmax = 0) AS opened",
            ([k[0] for k in missing], [k[1] for k in missing], [k[2] for k in missing]),
        )
        found.update({r["contact_id"]: r for r in await cur.fetchall()})
    return found


async def insert_inbound(conn: Conn, rows: list[Row]) -> list[tuple[Row, bool]]:
    """Store inbound messages in order; per row (stored row, created now). A replay (or a
    second copy in the same batch) returns the row stored first."""
    if not rows:
        return []
    cols = (
        "workspace_id",
        "channel_id",
        "conversation_id",
        "type",
        "text",
        "payload",
        "provider_message_id",
        "trace_id",
        "sent_at",
    )
    cur = await conn.execute(
        "INSERT INTO messages (workspace_id, channel_id, conversation_id, direction, author,"
        " type, text, payload, status, provider_message_id, trace_id, sent_at, created_at)"
        " SELECT v.w, v.ch, v.cv, 'in', 'contact', v.t, v.tx, v.pl, 'received', v.pm, v.tr,"
        f" v.sa, {_ORDERED_NOW}"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::jsonb[],"
        " %s::text[], %s::text[], %s::timestamptz[]) WITH ORDINALITY"
        " AS v(w, ch, cv, t, tx, pl, pm, tr, sa, n) ORDER BY v.n"
        " ON CONFLICT (channel_id, provider_message_id) WHERE provider_message_id IS NOT NULL"
        f" DO NOTHING RETURNING {_MSG_COLS}",
        [[Jsonb(r[c]) if c == "payload" else r[c] for r in rows] for c in cols],
    )
    created = {(r["channel_id"], r["provider_message_id"]): r for r in await cur.fetchall()}
    stored = dict(created)
    missing = [
        (r["channel_id"], r["provider_message_id"])
        for r in rows
        if (r["channel_id"], r["provider_message_id"]) not in stored
    ]
    if missing:
        chs, pms = _pairs(missing)
        cur = await conn.execute(
            f"SELECT {_MSG_M} FROM messages m"
            " JOIN unnest(%s::uuid[], %s::text[]) AS v(ch, pm)"
            " ON m.channel_id = v.ch AND m.provider_message_id = v.pm",
            (chs, pms),
        )
        stored.update(
            {(r["channel_id"], r["provider_message_id"]): r for r in await cur.fetchall()}
        )
    out: list[tuple[Row, bool]] = []
    first: set[tuple[UUID, str]] = set()
    for r in rows:
        key = (r["channel_id"], r["provider_message_id"])
        out.append((stored[key], key in created and key not in first))
        first.add(key)
    return out


async def bot_replied(conn: Conn, keys: Sequence[tuple[UUID, UUID]]) -> set[UUID]:
    """Which of these inbound messages, as (workspace_id, message_id), already have their
    bot reply (found by ``messages_one_bot_reply``; the workspace is checked beside it)."""
    if not keys:
        return set()
    ws, ids = _pairs(keys)
    cur = await conn.execute(
        "SELECT m.in_reply_to FROM messages m"
        " JOIN unnest(%s::uuid[], %s::uuid[]) AS v(w, id)"
        " ON m.in_reply_to = v.id AND m.workspace_id = v.w"
        # ANY keeps it an index lookup on in_reply_to, whatever the join's estimate.
        " WHERE m.in_reply_to = ANY(%s) AND m.direction = 'out' AND m.author = 'bot'",
        (ws, ids, ids),
    )
    return {r["in_reply_to"] for r in await cur.fetchall()}


async def touch_conversations(
    conn: Conn, rows: Sequence[tuple[UUID, UUID, datetime, datetime | None]]
) -> None:
    """Record messages' times on conversations: (workspace_id, conversation_id, at,
    inbound_at or None), at most one row per conversation (``conversations.touch``)."""
    if not rows:
        return
    await conn.execute(
        "UPDATE conversations c SET last_message_at = greatest(c.last_message_at, v.at),"
        " last_inbound_at = greatest(c.last_inbound_at, v.ia)"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[], %s::timestamptz[])"
        " AS v(w, id, at, ia) WHERE c.id = v.id AND c.workspace_id = v.w",
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
    )


async def insert_bot_replies(conn: Conn, rows: list[Row]) -> dict[UUID, tuple[Row, bool]]:
    """The one bot reply of each inbound message (workspace_id, channel_id,
    conversation_id, in_reply_to, text, trace_id): per ``in_reply_to``, the stored reply
    and whether it was created now (a retry returns the one stored before)."""
    if not rows:
        return {}
    cols = ("workspace_id", "channel_id", "conversation_id", "in_reply_to", "text", "trace_id")
    cur = await conn.execute(
        "INSERT INTO messages (workspace_id, channel_id, conversation_id, direction, author,"
        " type, text, status, in_reply_to, trace_id, created_at)"
        f" SELECT v.w, v.ch, v.cv, 'out', 'bot', 'text', v.tx, 'pending', v.r, v.tr, {_ORDERED_NOW}"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::text[])"
        " WITH ORDINALITY AS v(w, ch, cv, r, tx, tr, n) ORDER BY v.n"
        " ON CONFLICT (in_reply_to) WHERE direction = 'out' AND author = 'bot'"
        f" DO NOTHING RETURNING {_MSG_COLS}",
        [[r[c] for r in rows] for c in cols],
    )
    out = {r["in_reply_to"]: (r, True) for r in await cur.fetchall()}
    missing = [(r["workspace_id"], r["in_reply_to"]) for r in rows if r["in_reply_to"] not in out]
    if missing:
        ws, ids = _pairs(missing)
        cur = await conn.execute(
            f"SELECT {_MSG_M} FROM messages m"
            " JOIN unnest(%s::uuid[], %s::uuid[]) AS v(w, r) ON m.workspace_id = v.w"
            " AND m.in_reply_to = v.r WHERE m.direction = 'out' AND m.author = 'bot'",
            (ws, ids),
        )
        out.update({r["in_reply_to"]: (r, False) for r in await cur.fetchall()})
    return out


async def claim_for_send(
    conn: Conn, keys: Sequence[tuple[UUID, UUID]], *, claimer: UUID, lease_seconds: float
) -> tuple[set[UUID], dict[UUID, datetime]]:
    """Move outbound messages (workspace_id, message_id) to ``sending`` for ``claimer`` (one
    worker process); returns the ids claimed, and the ids another worker claimed less than
    ``lease_seconds`` ago with the time their claim runs out.

    A message that reached ``sent``, ``failed`` or ``blocked``, or that has a provider id,
    is never claimed again, whatever replays its send request. A ``sending`` one is taken
    over only from the same worker (a retried batch) or once its claim ran out (its worker
    died, or lost the partition in a rebalance and still sends): two workers never send
    it at the same time.
    """
    if not keys:
        return set(), {}
    ws, ids = _pairs(keys)
    cur = await conn.execute(
        f"UPDATE messages m SET status = 'sending', status_rank = {_SENDING},"
        " send_claimed_by = %(claimer)s, send_claimed_at = now()"
        " FROM unnest(%(ws)s::uuid[], %(ids)s::uuid[]) AS v(w, id)"
        " WHERE m.id = v.id AND m.workspace_id = v.w AND m.direction = 'out'"
        " AND m.status IN ('pending', 'sending') AND m.provider_message_id IS NULL"
        " AND (m.status = 'pending' OR m.send_claimed_by IS NULL"
        " OR m.send_claimed_by = %(claimer)s"
        " OR m.send_claimed_at < now() - make_interval(secs => %(lease)s))"
        " RETURNING m.id",
        {"ws": ws, "ids": ids, "claimer": claimer, "lease": lease_seconds},
    )
    claimed = {r["id"] for r in await cur.fetchall()}
    if len(claimed) == len(set(ids)):
        return claimed, {}
    cur = await conn.execute(
        "SELECT m.id, m.send_claimed_at + make_interval(secs => %(lease)s) AS until"
        " FROM messages m JOIN unnest(%(ws)s::uuid[], %(ids)s::uuid[]) AS v(w, id)"
        " ON m.id = v.id AND m.workspace_id = v.w"
        " WHERE m.status = 'sending' AND m.provider_message_id IS NULL"
        " AND m.id <> ALL(%(claimed)s::uuid[])",
        {"ws": ws, "ids": ids, "claimed": list(claimed), "lease": lease_seconds},
    )
    return claimed, {r["id"]: r["until"] for r in await cur.fetchall()}


async def get_conversations(conn: Conn, keys: Sequence[tuple[UUID, UUID]]) -> dict[UUID, Row]:
    """Conversations by (workspace_id, conversation_id), keyed by id."""
    if not keys:
        return {}
    ws, ids = _pairs(keys)
    cur = await conn.execute(
        f"SELECT {_CONV_C}"
        " FROM conversations c JOIN unnest(%s::uuid[], %s::uuid[]) AS v(w, id)"
        " ON c.id = v.id AND c.workspace_id = v.w",
        (ws, ids),
    )
    return {r["id"]: r for r in await cur.fetchall()}


async def mark_sent(conn: Conn, rows: Sequence[tuple[UUID, UUID, str, datetime]]) -> None:
    """Providers accepted these (workspace_id, message_id, provider_message_id, sent_at):
    as ``messages.mark_sent``, statuses that arrived first may rank higher."""
    if not rows:
        return
    await conn.execute(
        "UPDATE messages m SET provider_message_id = v.pm, sent_at = v.at,"
        f" status = CASE WHEN m.status_rank > {_SENT} THEN m.status ELSE 'sent' END,"
        f" status_rank = greatest(m.status_rank, {_SENT})"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[]) AS v(w, id, pm, at)"
        " WHERE m.id = v.id AND m.workspace_id = v.w",
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
    )


async def runs_for_messages(conn: Conn, keys: Sequence[tuple[UUID, UUID]]) -> dict[UUID, Row]:
    """The runs that already answered these inbound messages (workspace_id, message_id),
    keyed by message id (``runs.get_run_for_message`` for a batch)."""
    if not keys:
        return {}
    ws, ids = _pairs(keys)
    cur = await conn.execute(
        f"SELECT {_RUN_R} FROM agent_runs r"
        " JOIN unnest(%s::uuid[], %s::uuid[]) AS v(w, m)"
        " ON r.message_id = v.m AND r.workspace_id = v.w",
        (ws, ids),
    )
    return {r["message_id"]: r for r in await cur.fetchall()}


async def histories(
    conn: Conn, keys: Sequence[tuple[UUID, UUID, UUID]], *, limit: int = 40
) -> list[list[Row]]:
    """Per (workspace_id, conversation_id, message_id), in order: ``messages.history`` of
    that message, oldest first; one statement for the batch."""
    if not keys:
        return []
    cur = await conn.execute(
        "SELECT v.n, h.direction, h.author, h.text, h.created_at"
        " FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[]) WITH ORDINALITY AS v(w, c, m, n)"
        # The message's own time first, by its id (LIMIT keeps it a per-row index lookup:
        # a plain join on unnest was planned as a hash over all messages), then the
        # history below it on (conversation_id, created_at).
        " CROSS JOIN LATERAL (SELECT created_at FROM messages"
        " WHERE id = v.m AND workspace_id = v.w LIMIT 1) a"
        " CROSS JOIN LATERAL (SELECT direction, author, text, created_at, id FROM messages"
        " WHERE conversation_id = v.c AND workspace_id = v.w AND created_at < a.created_at"
        " AND text IS NOT NULL AND status NOT IN ('failed', 'blocked')"
        " ORDER BY created_at DESC, id DESC LIMIT %s) h ORDER BY v.n, h.created_at, h.id",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], limit),
    )
    out: list[list[Row]] = [[] for _ in keys]
    for r in await cur.fetchall():
        out[r.pop("n") - 1].append(r)
    return out


_RUN_FIELDS = (
    ("workspace_id", "uuid"),
    ("agent_id", "uuid"),
    ("version_id", "uuid"),
    ("conversation_id", "uuid"),
    ("message_id", "uuid"),
    ("model", "text"),
    ("prompt_tokens", "int"),
    ("completion_tokens", "int"),
    ("latency_ms", "int"),
    ("cost_usd", "numeric"),
    ("sources", "jsonb"),
    ("outcome", "text"),
    ("error", "text"),
    ("reply_text", "text"),
    ("trace_id", "text"),
    ("retrieval_error", "text"),
)


def _run_value(kind: str, value: Any) -> Any:
    """A run field as ``runs.insert_run`` stores it (cost as the decimal of its repr)."""
    if kind == "jsonb":
        return Jsonb(value)
    if kind == "numeric":
        return Decimal(str(value))
    return value


async def insert_runs(conn: Conn, rows: list[Row]) -> dict[UUID, tuple[Row, bool]]:
    """Record runs (the fields of ``runs.insert_run``) in order; per message id, the stored
    run and whether it was created now (a retry returns the run stored before)."""
    if not rows:
        return {}
    names = ", ".join(name for name, _ in _RUN_FIELDS)
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in _RUN_FIELDS)
    short = ", ".join(f"c{i}" for i in range(len(_RUN_FIELDS)))
    values = [[_run_value(kind, r.get(name)) for r in rows] for name, kind in _RUN_FIELDS]
    cur = await conn.execute(
        f"INSERT INTO agent_runs ({names}, created_at) SELECT {short}, {_ORDERED_NOW}"
        f" FROM unnest({arrays}) WITH ORDINALITY AS v({short}, n) ORDER BY v.n"
        f" ON CONFLICT (message_id) DO NOTHING RETURNING {_RUN_COLS}",
        values,
    )
    out = {r["message_id"]: (r, True) for r in await cur.fetchall()}
    missing = [(r["workspace_id"], r["message_id"]) for r in rows if r["message_id"] not in out]
    out.update({m: (r, False) for m, r in (await runs_for_messages(conn, missing)).items()})
    return out
