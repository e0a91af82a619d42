"""storage.webhook_events against PostgreSQL: one row per item key, forwarded once."""

from __future__ import annotations

import json
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


async def test_a_redriven_record_is_forwarded_again_and_a_plain_replay_is_not(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    """The journal redrives a webhook when the broker lost what normalize had forwarded."""
    from agents_pipeline import normalize
    from streams.contracts import RawHeaders

    ch = await create_channel(gateway, tenant, "sandbox", {})
    mid = f"sbx-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"from": "c-1", "text": "oi", "message_id": mid}).encode()
    headers = RawHeaders(
        provider="sandbox",
        channel_id=ch["id"],
        workspace_id=tenant.id,
        received_at=datetime(2026, 3, 1, tzinfo=UTC),
        trace_id="t-lost",
        idempotency_key="k",
        message_id=mid,
    )
    plain = normalize.RawRecord(headers.to_kafka(), body)
    redriven = normalize.RawRecord(headers.model_copy(update={"redrive": True}).to_kafka(), body)
    assert ("redrive", b"1") in redriven.headers and all(k != "redrive" for k, _ in plain.headers)

    async def forwarded(record: normalize.RawRecord, *, seen: bool) -> list[Any]:
        result = normalize.plan_batch([record], seen=lambda key: seen)
        await normalize.persist_batch(pool, result)
        await normalize.mark_batch_forwarded(pool, result)
        return [e for p in result.forward for e in p.events]

    [first] = await forwarded(plain, seen=False)
    assert await forwarded(plain, seen=True) == []  # the dedupe table drops it
    assert await forwarded(plain, seen=False) == []  # so does the table's forwarded row
    [again] = await forwarded(redriven, seen=True)  # neither stops a redrive
    assert again.webhook_event_id == first.webhook_event_id
    assert again.provider_message_id == first.provider_message_id == mid
    assert again.trace_id == "t-lost"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, max(raw_headers::text) AS h FROM webhook_events"
            " WHERE workspace_id = %s",
            (uuid.UUID(tenant.id),),
        )
        stored = await cur.fetchone()
    assert stored["n"] == 1 and "redrive" not in json.loads(stored["h"])
