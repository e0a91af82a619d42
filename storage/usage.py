"""``usage_records``: per workspace and day, written from the stream's usage table."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from storage.db import Conn

KINDS = ("inbound_messages", "outbound_messages", "llm_prompt_tokens", "llm_completion_tokens")


async def set_usage(conn: Conn, rows: list[tuple[UUID, date, dict[str, int]]]) -> None:
    """Write the counters' current totals (absolute values: a replay writes the same row)."""
    for workspace_id, day, counts in rows:
        values = [int(counts.get(k, 0)) for k in KINDS]
        await conn.execute(
            f"INSERT INTO usage_records (workspace_id, day, {', '.join(KINDS)})"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (workspace_id, day) DO UPDATE SET "
            + ", ".join(f"{k} = greatest(usage_records.{k}, EXCLUDED.{k})" for k in KINDS),
            [workspace_id, day, *values],
        )


async def usage_between(
    conn: Conn, *, workspace_id: UUID, start: date, end: date, granularity: str
) -> list[dict[str, Any]]:
    """Totals per day or month between two days (inclusive)."""
    period = "day" if granularity == "day" else "date_trunc('month', day)::date"
    sums = ", ".join(f"sum({k})::bigint AS {k}" for k in KINDS)
    cur = await conn.execute(
        f"SELECT {period} AS period, {sums} FROM usage_records"
        " WHERE workspace_id = %s AND day BETWEEN %s AND %s GROUP BY 1 ORDER BY 1",
        (workspace_id, start, end),
    )
    return await cur.fetchall()
