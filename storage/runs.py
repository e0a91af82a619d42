"""Agent runs: one per inbound message, with what the model cost and which sources it used."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
COLS = (
    "id, workspace_id, agent_id, version_id, conversation_id, message_id, model, prompt_tokens,"
    " completion_tokens, latency_ms, cost_usd, sources, outcome, error, reply_text, trace_id,"
    " retrieval_error, created_at"
)


async def get_run_for_message(conn: Conn, *, message_id: UUID) -> Row | None:
    """The run that answered an inbound message, if any (a retried generate reuses it)."""
    cur = await conn.execute(f"SELECT {COLS} FROM agent_runs WHERE message_id = %s", (message_id,))
    return await cur.fetchone()


async def insert_run(conn: Conn, run: dict[str, Any]) -> tuple[Row, bool]:
    """Record a run; when the message already has one, return it instead (created=False)."""
    cur = await conn.execute(
        "INSERT INTO agent_runs (workspace_id, agent_id, version_id, conversation_id, message_id,"
        " model, prompt_tokens, completion_tokens, latency_ms, cost_usd, sources, outcome, error,"
        " reply_text, trace_id, retrieval_error)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (message_id) DO NOTHING RETURNING {COLS}",
        (
            run["workspace_id"],
            run["agent_id"],
            run["version_id"],
            run["conversation_id"],
            run["message_id"],
            run["model"],
            run["prompt_tokens"],
            run["completion_tokens"],
            run["latency_ms"],
            Decimal(str(run["cost_usd"])),
            Jsonb(run["sources"]),
            run["outcome"],
            run["error"],
            run["reply_text"],
            run["trace_id"],
            run.get("retrieval_error"),
        ),
    )
    row = await cur.fetchone()
    if row is not None:
        return row, True
    return await get_run_for_message(conn, message_id=run["message_id"]), False  # type: ignore[return-value]


async def list_runs(
    conn: Conn, *, workspace_id: UUID, agent_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """An agent's runs, newest first."""
    cond, params = keyset(cursor, descending=True)
    cur = await conn.execute(
        f"SELECT {COLS} FROM agent_runs WHERE workspace_id = %s AND agent_id = %s AND {cond}"
        f" {order_by(descending=True)} LIMIT %s",
        [workspace_id, agent_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)
