"""storage.webhook_events against PostgreSQL: one row per item key, forwarded once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from storage import webhook_events
from tests.conftest import Gateway, Tenant, make_tenant
from tests.integration.helpers import create_channel


def row(tenant: Tenant, channel: dict, key: str, text: str) -> dict[str, Any]:
    """A webhook item's row as normalize writes it."""
    return {
        "workspace_id": uuid.UUID(tenant.id),
        "channel_id": uuid.UUID(channel["id"]),
        "provider": "sandbox",
        "idempotency_key": key,
        "raw_payload": {"text": text, "quote": 'a "b" \\ c', "n": [1, 2]},
        "raw_headers": {"trace_id": f"t-{key}"},
        "trace_id": f"t-{key}",
        "received_at": datetime(2026, 3, 1, tzinfo=UTC),
    }


async def test_insert_events_once_per_key_and_forwarded_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    other = await make_tenant(gateway, "Outra")
    ch = await create_channel(gateway, tenant, "sandbox", {})
    ch_other = await create_channel(gateway, other, "sandbox", {})
    key = f"k-{uuid.uuid4().hex[:8]}"
    batch = [
        row(tenant, ch, key, "primeiro"),
        row(other, ch_other, key, "outro workspace"),  # the same key elsewhere: its own row
        row(tenant, ch, key, "repetido"),  # a second delivery in the same batch
        row(tenant, ch, key + "-2", "segundo"),
    ]
    async with pool.connection() as conn:
        ids = await webhook_events.insert_events(conn, batch)
    assert len(ids) == 3 and not any(forwarded for _, forwarded in ids.values())
    mine = ids[f"{tenant.id}:{key}"][0]
    async with pool.connection() as conn:
        await webhook_events.mark_forwarded(conn, {mine: [{"type": "text"}]})
        again = await webhook_events.insert_events(conn, batch[:2])
        cur = await conn.execute(
            "SELECT raw_payload, raw_headers, normalized FROM webhook_events WHERE id = %s",
            (mine,),
        )
        stored = await cur.fetchone()
    assert again[f"{tenant.id}:{key}"] == (mine, True)
    assert again[f"{other.id}:{key}"] == (ids[f"{other.id}:{key}"][0], False)
    assert stored["raw_payload"] == batch[0]["raw_payload"]
    assert stored["raw_headers"] == {"trace_id": f"t-{key}"}
    assert stored["normalized"] == [{"type": "text"}]
