"""Conversations and messages: filtered lists, oldest-first messages, takeover, human replies."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.producer import BrokerUnavailable
from gateway.services import SERVICES
from tests.conftest import Gateway, Tenant, make_tenant
from tests.integration.helpers import create_channel, read_topic

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@dataclass
class Seeded:
    """A contact's conversation on a channel, inserted straight into the database."""

    channel_id: str
    contact_id: str
    conversation_id: str
    external_id: str


async def seed_conversation(
    pool: AsyncConnectionPool,
    tenant: Tenant,
    channel_id: str,
    external_id: str,
    *,
    created_at: datetime = T0,
    status: str = "open",
    mode: str = "bot",
    name: str | None = "João Araújo",
    phone: str | None = "+5511999990000",
) -> Seeded:
    """A contact and a conversation (as the pipeline would have made them)."""
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO contacts (workspace_id, channel_id, external_id, phone, name)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (channel_id, external_id) DO UPDATE SET name = excluded.name"
            " RETURNING id",
            (tenant.id, channel_id, external_id, phone, name),
        )
        contact_id = (await cur.fetchone())["id"]
        cur = await conn.execute(
            "INSERT INTO conversations (workspace_id, channel_id, contact_id, status, mode,"
            " created_at, last_message_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (tenant.id, channel_id, contact_id, status, mode, created_at, created_at),
        )
        conversation_id = (await cur.fetchone())["id"]
    return Seeded(channel_id, str(contact_id), str(conversation_id), external_id)


async def seed_message(
    pool: AsyncConnectionPool,
    tenant: Tenant,
    conv: Seeded,
    *,
    text: str,
    created_at: datetime,
    direction: str = "in",
) -> str:
    """A stored message of the conversation."""
    author = "contact" if direction == "in" else "bot"
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO messages (workspace_id, channel_id, conversation_id, direction, author,"
            " type, text, status, provider_message_id, trace_id, created_at)"
            " VALUES (%s, %s, %s, %s, %s, 'text', %s, 'received', %s, %s, %s) RETURNING id",
            (
                tenant.id,
                conv.channel_id,
                conv.conversation_id,
                direction,
                author,
                text,
                f"wamid.{secrets.token_hex(8)}",
                secrets.token_hex(16),
                created_at,
            ),
        )
        return str((await cur.fetchone())["id"])


async def _sandbox(gateway: Gateway, tenant: Tenant, name: str = "sandbox") -> str:
    return (await create_channel(gateway, tenant, "sandbox", {}, name=name))["id"]


async def _get(gateway: Gateway, tenant: Tenant, path: str) -> tuple[int, Any]:
    return await gateway.call("GET", path, key=tenant.key, workspace=tenant.id)


async def _all_pages(gateway: Gateway, tenant: Tenant, path: str, limit: int) -> list[dict]:
    """Every item of a list, walking the cursors."""
    sep = "&" if "?" in path else "?"
    items: list[dict] = []
    cursor = None
    for _ in range(50):
        url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        status, body = await _get(gateway, tenant, url)
        assert status == 200, body
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ended")


async def test_list_filters_and_pages(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ch1 = await _sandbox(gateway, tenant, "one")
    ch2 = await _sandbox(gateway, tenant, "two")
    convs = [
        await seed_conversation(pool, tenant, ch1, "c1", created_at=T0),
        await seed_conversation(pool, tenant, ch1, "c2", created_at=T0 + timedelta(minutes=1)),
        await seed_conversation(
            pool, tenant, ch1, "c3", created_at=T0 + timedelta(minutes=2), status="closed"
        ),
        await seed_conversation(
            pool, tenant, ch2, "c4", created_at=T0 + timedelta(minutes=3), mode="human"
        ),
        await seed_conversation(pool, tenant, ch2, "c5", created_at=T0 + timedelta(minutes=4)),
    ]
    newest_first = [c.conversation_id for c in reversed(convs)]

    items = await _all_pages(gateway, tenant, "/api/v1/conversations/", limit=2)
    assert [i["id"] for i in items] == newest_first
    first = items[-1]
    assert first["channel_id"] == ch1 and first["status"] == "open" and first["mode"] == "bot"
    assert first["contact"] == {
        "id": convs[0].contact_id,
        "external_id": "c1",
        "name": "João Araújo",
        "phone": "+5511999990000",
    }
    assert first["last_message_at"].startswith("2026-01-05T12:00:00")

    by_channel = await _all_pages(gateway, tenant, f"/api/v1/conversations/?channel_id={ch1}", 1)
    assert [i["id"] for i in by_channel] == newest_first[2:]
    _, closed = await _get(gateway, tenant, "/api/v1/conversations/?status=closed")
    assert [i["id"] for i in closed["items"]] == [convs[2].conversation_id]
    _, human = await _get(gateway, tenant, "/api/v1/conversations/?mode=human")
    assert [i["id"] for i in human["items"]] == [convs[3].conversation_id]
    _, both = await _get(gateway, tenant, f"/api/v1/conversations/?channel_id={ch2}&status=open")
    assert [i["id"] for i in both["items"]] == newest_first[:2]
    _, none = await _get(gateway, tenant, f"/api/v1/conversations/?channel_id={ch2}&status=closed")
    assert none == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query",
    ["status=archived", "mode=robot", "channel_id=not-a-uuid", "limit=0", "cursor=garbage"],
)
async def test_list_bad_parameters(gateway: Gateway, tenant: Tenant, query: str) -> None:
    status, body = await _get(gateway, tenant, f"/api/v1/conversations/?{query}")
    assert status == 400, body
    assert body["error"]["code"] in ("invalid_parameter", "invalid_cursor")


async def test_messages_oldest_first(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    conv = await seed_conversation(pool, tenant, await _sandbox(gateway, tenant), "5511")
    other = await seed_conversation(pool, tenant, conv.channel_id, "5522")
    # Inserted out of order: the list orders by time, not by insertion.
    ids = {}
    for minute in (3, 0, 4, 1, 2):
        ids[minute] = await seed_message(
            pool, tenant, conv, text=f"msg {minute}", created_at=T0 + timedelta(minutes=minute)
        )
    await seed_message(pool, tenant, other, text="elsewhere", created_at=T0)

    path = f"/api/v1/conversations/{conv.conversation_id}/messages"
    items = await _all_pages(gateway, tenant, path, limit=2)
    assert [i["id"] for i in items] == [ids[m] for m in range(5)]
    assert [i["text"] for i in items] == [f"msg {m}" for m in range(5)]
    m = items[0]
    assert m["direction"] == "in" and m["author"] == "contact" and m["type"] == "text"
    assert m["status"] == "received" and m["provider_message_id"].startswith("wamid.")
    assert len(m["trace_id"]) == 32 and m["in_reply_to"] is None and m["error_code"] is None
    assert m["created_at"].startswith("2026-01-05T12:00:00")

    status, _ = await _get(gateway, tenant, "/api/v1/conversations/not-a-uuid/messages")
    assert status == 404


async def test_get_and_patch_mode_and_status(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    conv = await seed_conversation(pool, tenant, await _sandbox(gateway, tenant), "5533")
    path = f"/api/v1/conversations/{conv.conversation_id}"
    status, got = await _get(gateway, tenant, path)
    assert status == 200 and got["id"] == conv.conversation_id and got["mode"] == "bot"

    # A phone takeover that would expire: setting human from the API makes it indefinite.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE conversations SET mode = 'human', human_until = now() + interval '1 hour'"
            " WHERE id = %s",
            (conv.conversation_id,),
        )
    status, patched = await gateway.call(
        "PATCH", path, key=tenant.key, workspace=tenant.id, json={"mode": "human"}
    )
    assert status == 200, patched
    assert patched["mode"] == "human" and patched["human_until"] is None
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT mode, human_until FROM conversations WHERE id = %s", (conv.conversation_id,)
        )
        assert await cur.fetchone() == {"mode": "human", "human_until": None}

    status, patched = await gateway.call(
        "PATCH", path, key=tenant.key, workspace=tenant.id, json={"mode": "bot", "status": "closed"}
    )
    assert status == 200 and patched["mode"] == "bot" and patched["status"] == "closed"

    # Closed: the contact's next conversation may open; reopening this one then collides.
    newer = await seed_conversation(pool, tenant, conv.channel_id, "5533")
    assert newer.conversation_id != conv.conversation_id
    status, body = await gateway.call(
        "PATCH", path, key=tenant.key, workspace=tenant.id, json={"status": "open"}
    )
    assert status == 409 and body["error"]["code"] == "open_conversation_exists"

    for bad in ({"mode": "robot"}, {"status": "archived"}, {"mode": None}, {"extra": 1}):
        status, body = await gateway.call(
            "PATCH", path, key=tenant.key, workspace=tenant.id, json=bad
        )
        assert status == 422 and body["error"]["code"] == "validation_error", bad

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT actor, details FROM audit_log WHERE workspace_id = %s"
            " AND action = 'conversation.update' AND object_id = %s ORDER BY created_at",
            (tenant.id, conv.conversation_id),
        )
        rows = await cur.fetchall()
    assert [r["details"] for r in rows] == [{"mode": "human"}, {"mode": "bot", "status": "closed"}]
    assert {r["actor"] for r in rows} == {tenant.key_id}


async def _send_records(gateway: Gateway, outbound_id: str) -> list[Any]:
    records = await read_topic(gateway.settings.broker_url, "messages.send")
    return [r for r in records if json.loads(r.value)["outbound_id"] == outbound_id]


async def test_human_reply_is_stored_and_sent_on(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    conv = await seed_conversation(pool, tenant, await _sandbox(gateway, tenant), "5544")
    text = "Olá! Já verificámos o seu pedido: a entrega é amanhã às 9h, açúcar incluído."
    path = f"/api/v1/conversations/{conv.conversation_id}/messages"
    status, body = await gateway.call(
        "POST", path, key=tenant.key, workspace=tenant.id, json={"text": text}
    )
    assert status == 202, body
    assert body["status"] == "pending" and len(body["trace_id"]) == 32

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.direction, m.author, m.status, m.text, m.trace_id, m.conversation_id,"
            " c.last_message_at FROM messages m JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.id = %s",
            (body["id"],),
        )
        row = await cur.fetchone()
    assert row["direction"] == "out" and row["author"] == "human"
    # pending until a worker's send stage takes it (one may be running in this session)
    assert row["status"] in ("pending", "sending", "sent") and row["text"] == text
    assert row["trace_id"] == body["trace_id"]
    assert row["last_message_at"] > T0  # moved to the reply's time

    records = await _send_records(gateway, body["id"])
    assert len(records) == 1
    sent = json.loads(records[0].value)
    assert records[0].key == f"{conv.channel_id}:5544".encode()
    assert sent["author"] == "human" and sent["text"] == text
    assert sent["outbound_id"] == body["id"] and sent["trace_id"] == body["trace_id"]
    assert sent["conversation_id"] == conv.conversation_id
    assert sent["workspace_id"] == tenant.id and sent["channel_id"] == conv.channel_id
    assert sent["provider"] == "sandbox" and sent["contact_external_id"] == "5544"
    assert sent["contact_phone"] == "+5511999990000" and sent["received_at"] is None

    status, listed = await _get(gateway, tenant, path)
    assert [m["id"] for m in listed["items"]] == [body["id"]]
    assert listed["items"][0]["author"] == "human" and listed["items"][0]["direction"] == "out"

    for bad in ({"text": ""}, {"text": "   "}, {"text": "x" * 4097}, {}, {"text": 5}):
        status, err = await gateway.call(
            "POST", path, key=tenant.key, workspace=tenant.id, json=bad
        )
        assert status == 422 and err["error"]["code"] == "validation_error", bad


async def test_reply_to_closed_conversation_is_refused(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    conv = await seed_conversation(
        pool, tenant, await _sandbox(gateway, tenant), "5555", status="closed"
    )
    status, body = await gateway.call(
        "POST",
        f"/api/v1/conversations/{conv.conversation_id}/messages",
        key=tenant.key,
        workspace=tenant.id,
        json={"text": "Ainda aí?"},
    )
    assert status == 409 and body["error"]["code"] == "conversation_closed"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM messages WHERE conversation_id = %s",
            (conv.conversation_id,),
        )
        assert (await cur.fetchone())["n"] == 0


async def test_reply_when_broker_is_away_fails_the_row(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = await seed_conversation(pool, tenant, await _sandbox(gateway, tenant), "5566")

    async def unavailable(*args: Any, **kwargs: Any) -> float:
        raise BrokerUnavailable("not connected to the broker")

    monkeypatch.setattr(gateway.app[SERVICES].producer, "send", unavailable)
    async with gateway.http.post(
        f"{gateway.url}/api/v1/conversations/{conv.conversation_id}/messages",
        json={"text": "Volto já"},
        headers=tenant.headers(),
    ) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        body = await resp.json()
    assert body["error"]["code"] == "broker_unavailable"
    message_id = body["error"]["details"]["message_id"]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, error_code FROM messages WHERE id = %s", (message_id,)
        )
        assert await cur.fetchone() == {"status": "failed", "error_code": "broker_unavailable"}


async def test_isolation(gateway: Gateway, pool: AsyncConnectionPool) -> None:
    a = await make_tenant(gateway, "A")
    b = await make_tenant(gateway, "B")
    b_conv = await seed_conversation(pool, b, await _sandbox(gateway, b), "5577")
    await seed_message(pool, b, b_conv, text="segredo", created_at=T0)
    a_conv = await seed_conversation(pool, a, await _sandbox(gateway, a), "5577")

    path = f"/api/v1/conversations/{b_conv.conversation_id}"
    for method, url, body in [
        ("GET", path, None),
        ("PATCH", path, {"status": "closed"}),
        ("GET", f"{path}/messages", None),
        ("POST", f"{path}/messages", {"text": "oi"}),
    ]:
        status, got = await gateway.call(method, url, key=a.key, workspace=a.id, json=body)
        assert status == 404 and got["error"]["code"] == "not_found", (method, url, got)

    _, listed = await _get(gateway, a, "/api/v1/conversations/?limit=200")
    assert [c["id"] for c in listed["items"]] == [a_conv.conversation_id]
    _, filtered = await _get(gateway, a, f"/api/v1/conversations/?channel_id={b_conv.channel_id}")
    assert filtered["items"] == []
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status FROM conversations WHERE id = %s", (b_conv.conversation_id,)
        )
        assert (await cur.fetchone())["status"] == "open"
        cur = await conn.execute(
            "SELECT count(*) AS n FROM messages WHERE conversation_id = %s",
            (b_conv.conversation_id,),
        )
        assert (await cur.fetchone())["n"] == 1
