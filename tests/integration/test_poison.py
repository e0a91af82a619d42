"""A record that fails can only fail itself: poison from one workspace, nobody else loses a message.

A text holding NUL (``\\u0000``) or a lone UTF-16 surrogate (``\\ud800``) cannot be stored
by PostgreSQL; a message id longer than an index row allows cannot either. Such a record
once failed the one multi-row statement of its whole batch, and every other workspace's
records in that batch were dead-lettered (or, for the long id, retried for ever). Here a
hostile workspace sends them between another workspace's normal messages: through the
gateway (which refuses them with a 400), and straight onto the topics (as a producer that
bypassed the gateway would), at normalize and at resolve. The other workspace's messages
are each stored once and answered once; each poison record is dead-lettered, alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool

from streams.contracts import ContactRef, InboundMessage, ProviderName, RawHeaders
from streams.topics import DEADLETTER, MESSAGES_NORMALIZED, WEBHOOKS_RAW, bootstrap_servers
from tests.conftest import Fakes, Gateway, Tenant, make_tenant, wait_until
from tests.fakes.evolution_api import DEFAULT_API_KEY as EVO_KEY
from tests.integration.helpers import count_rows, create_channel, read_topic, sign
from tests.integration.test_pipeline import APP_SECRET, cloud_channel, cloud_text, make_agent

REPLY = "Resposta simulada para: "  # the fake LLM's answer to a text


async def evolution_channel(
    gw: Gateway, tenant: Tenant, fakes: Fakes, agent_id: str | None = None
) -> dict:
    """An Evolution channel (token ``tok-<instance>``) pointed at the fake Evolution API."""
    instance = f"inst-{uuid.uuid4().hex[:8]}"
    config = {
        "base_url": fakes.evolution.base_url,
        "instance": instance,
        "api_key": EVO_KEY,
        "webhook_token": f"tok-{instance}",
    }
    return await create_channel(gw, tenant, "evolution", config, agent_id=agent_id)


def evolution_body(instance: str, number: str, text: str, **over: Any) -> dict:
    """An Evolution ``messages.upsert`` of a text (``over``: fields of ``data`` replaced)."""
    data = {
        "key": {
            "remoteJid": f"{number}@s.whatsapp.net",
            "fromMe": False,
            "id": uuid.uuid4().hex[:20].upper(),
        },
        "pushName": "Bia",
        "message": {"conversation": text},
        "messageType": "conversation",
        "messageTimestamp": int(time.time()),
        **over,
    }
    return {"event": "messages.upsert", "instance": instance, "data": data}


def poisoned(body: dict, placeholder: str, escape: bytes) -> bytes:
    """``body`` as JSON with ``placeholder`` replaced by a raw JSON escape (``\\u0000``)."""
    return json.dumps(body).encode().replace(placeholder.encode(), escape)


def number() -> str:
    """A contact's phone number, unique per call."""
    return f"5511{uuid.uuid4().int % 10**9:09d}"


async def inbound_texts(pool: AsyncConnectionPool, workspace_id: str) -> list[str]:
    """The workspace's inbound texts."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT text FROM messages WHERE workspace_id = %s AND direction = 'in'",
            (workspace_id,),
        )
        return sorted(r["text"] for r in await cur.fetchall())


async def bot_replies(pool: AsyncConnectionPool, workspace_id: str) -> list[dict]:
    """The workspace's bot replies that went out, with the text they answer."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT o.text, o.status, i.text AS question FROM messages o"
            " JOIN messages i ON i.id = o.in_reply_to"
            " WHERE o.workspace_id = %s AND o.direction = 'out' AND o.author = 'bot'",
            (workspace_id,),
        )
        return await cur.fetchall()


async def answered_once(pool: AsyncConnectionPool, workspace_id: str, texts: list[str]) -> None:
    """Every text stored once and answered once (after room for a wrong second reply)."""

    async def all_out() -> bool:
        rows = await bot_replies(pool, workspace_id)
        return len(rows) >= len(texts) and all(r["status"] in ("sent", "stored") for r in rows)

    await wait_until(all_out, timeout=90)
    await asyncio.sleep(1.5)
    assert await inbound_texts(pool, workspace_id) == sorted(texts)
    rows = await bot_replies(pool, workspace_id)
    assert sorted(r["question"] for r in rows) == sorted(texts)
    assert all(r["text"] == REPLY + r["question"] for r in rows)


async def dead_letters(broker_url: str, traces: set[str], stage: str) -> list[dict]:
    """The dead letters of these traces, once there is one for each."""

    async def found() -> list[dict]:
        recs = [json.loads(r.value) for r in await read_topic(broker_url, DEADLETTER)]
        mine = [d for d in recs if d["trace_id"] in traces]
        return mine if {d["trace_id"] for d in mine} == traces else []

    letters = await wait_until(found, timeout=60)
    assert all(d["stage"] == stage for d in letters), letters
    return letters


async def produce(broker_url: str, records: list[tuple[str, bytes, bytes, list]]) -> None:
    """Produce (topic, key, value, headers) records at once, so that they share batches."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(broker_url), acks="all", linger_ms=20
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for topic, key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# --- through the gateway ------------------------------------------------------------------

ESCAPES = [rb"\u0000", rb"\ud800", rb"\uDFFF"]  # NUL, a lone high and a lone low surrogate
X = "@@X@@"  # where a test puts a raw escape into JSON text


def json_headers(extra: dict[str, str]) -> dict[str, str]:
    """Request headers of a JSON body."""
    return {**extra, "Content-Type": "application/json"}


async def test_gateway_refuses_poison_and_the_other_workspace_loses_nothing(
    gateway: Gateway, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    hostile, victim = await make_tenant(gateway, "Hostile"), await make_tenant(gateway, "Victim")
    h_agent, v_agent = await make_agent(pool, hostile.id), await make_agent(pool, victim.id)
    h_sbx = await create_channel(gateway, hostile, "sandbox", {}, agent_id=h_agent)
    h_evo = await evolution_channel(gateway, hostile, fakes, h_agent)
    h_cloud = await cloud_channel(gateway, hostile, fakes, h_agent)
    v_sbx = await create_channel(gateway, victim, "sandbox", {}, agent_id=v_agent)
    v_evo = await evolution_channel(gateway, victim, fakes, v_agent)
    h_inst, v_inst = h_evo["config"]["instance"], v_evo["config"]["instance"]

    poison: list[tuple[str, bytes, dict[str, str]]] = []  # path, body, headers
    sbx_path = f"/api/v1/webhooks/sandbox/{h_sbx['id']}"
    for field in ("text", "name", "from"):  # in a text, a contact's name, a contact's id
        for esc in ESCAPES[:2]:
            fields = {"from": "ana", "name": "Ana", "text": "oi"}
            fields[field] += X
            poison.append((sbx_path, poisoned(fields, X, esc), hostile.headers()))
    in_key = poisoned({"from": "ana", "text": "oi", X: 1}, X, ESCAPES[0])
    poison.append((sbx_path, in_key, hostile.headers()))
    raw_nul = b'{"from": "ana", "text": "oi\x00"}'  # a raw NUL byte
    poison.append((sbx_path, raw_nul, hostile.headers()))
    evo_path = f"/api/v1/webhooks/evolution/{h_evo['id']}"
    evo_auth = {"Authorization": f"Bearer tok-{h_inst}"}
    for esc in ESCAPES:
        body = evolution_body(h_inst, number(), f"oi {X}")
        poison.append((evo_path, poisoned(body, X, esc), evo_auth))
    body = evolution_body(h_inst, number(), "oi", pushName=X)
    poison.append((evo_path, poisoned(body, X, ESCAPES[0]), evo_auth))
    body = {**evolution_body(h_inst, number(), "oi"), X: True}  # in a key
    poison.append((evo_path, poisoned(body, X, ESCAPES[1]), evo_auth))
    cloud_path = f"/api/v1/webhooks/whatsapp/{h_cloud['id']}"
    for esc in ESCAPES[:2]:  # signed as sent: refused after the signature, never altered
        raw = cloud_text(h_cloud["config"]["phone_number_id"], number(), f"oi {X}")
        raw = raw.replace(X.encode(), esc)
        poison.append((cloud_path, raw, {"X-Hub-Signature-256": sign(raw, APP_SECRET)}))

    texts = [f"pergunta {i} {uuid.uuid4().hex[:6]}" for i in range(6)]
    for i, text in enumerate(texts):
        if i % 2 == 0:
            status, answer = await gateway.call(
                "POST",
                f"/api/v1/webhooks/sandbox/{v_sbx['id']}",
                key=victim.key,
                workspace=victim.id,
                json={"from": f"c{i}", "text": text},
            )
        else:
            status, answer = await gateway.call(
                "POST",
                f"/api/v1/webhooks/evolution/{v_evo['id']}",
                json=evolution_body(v_inst, number(), text),
                headers={"Authorization": f"Bearer tok-{v_inst}"},
            )
        assert status == 200, answer
        for path, raw, headers in poison[i :: len(texts)]:
            status, answer = await gateway.call(
                "POST", path, data=raw, headers=json_headers(headers)
            )
            assert status == 400, (path, raw[:200], answer)
            assert answer["error"]["code"] == "unsupported_character", answer
            assert answer["error"]["message"]

    await answered_once(pool, victim.id, texts)
    for table in ("webhook_events", "messages"):
        sql = f"SELECT count(*) FROM {table} WHERE workspace_id = %s"
        assert await count_rows(pool, sql, hostile.id) == 0


async def test_deep_json_is_a_400_on_webhooks_and_the_api(
    gateway: Gateway, tenant: Tenant, fakes: Fakes
) -> None:
    deep_array = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    sbx = await create_channel(gateway, tenant, "sandbox", {})
    evo = await evolution_channel(gateway, tenant, fakes)
    cloud = await cloud_channel(gateway, tenant, fakes, None)
    evo_auth = {"Authorization": f"Bearer tok-{evo['config']['instance']}"}
    api = tenant.headers()
    calls = [
        (f"/api/v1/webhooks/sandbox/{sbx['id']}", api),
        (f"/api/v1/webhooks/evolution/{evo['id']}", evo_auth),
        ("/api/v1/webhooks/inbox/", api),
        ("/api/v1/agents/", api),
        ("/api/v1/channels/", api),
        (f"/api/v1/conversations/{uuid.uuid4()}/messages", api),  # a human's reply
    ]
    for body in (deep_array, deep_object):
        signed = {"X-Hub-Signature-256": sign(body, APP_SECRET)}
        for path, headers in [*calls, (f"/api/v1/webhooks/whatsapp/{cloud['id']}", signed)]:
            status, answer = await gateway.call(
                "POST", path, data=body, headers=json_headers(headers)
            )
            assert status == 400, (path, answer)
            assert answer["error"]["code"] == "json_too_deep", (path, answer)
    # 64 levels are read (then refused for their shape), 65 are too deep.
    for depth, status, code in ((64, 422, "validation_error"), (65, 400, "json_too_deep")):
        body = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
        got, answer = await gateway.call(
            "POST", "/api/v1/agents/", data=body, headers=json_headers(api)
        )
        assert (got, answer["error"]["code"]) == (status, code), answer


# --- records that bypassed the gateway ------------------------------------------------------


def raw_record(
    channel: dict, workspace_id: str, body: bytes, message_id: str | None = None
) -> tuple[tuple[str, bytes, bytes, list], str]:
    """A ``webhooks.raw`` record as the gateway produces it, and its trace id."""
    trace = secrets.token_hex(16)
    headers = RawHeaders.encode(
        provider=channel["provider"],
        channel_id=channel["id"],
        workspace_id=workspace_id,
        received_at=datetime.now(UTC),
        trace_id=trace,
        idempotency_key=f"sha256:{hashlib.sha256(body).hexdigest()}",
        message_id=message_id,
    )
    return (WEBHOOKS_RAW, channel["id"].encode(), body, headers), trace


async def test_poison_raw_records_are_dead_lettered_alone(
    gateway: Gateway, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    hostile, victim = await make_tenant(gateway, "Hostile"), await make_tenant(gateway, "Victim")
    h_agent, v_agent = await make_agent(pool, hostile.id), await make_agent(pool, victim.id)
    h_sbx = await create_channel(gateway, hostile, "sandbox", {}, agent_id=h_agent)
    h_evo = await evolution_channel(gateway, hostile, fakes, h_agent)
    v_sbx = await create_channel(gateway, victim, "sandbox", {}, agent_id=v_agent)
    v_evo = await evolution_channel(gateway, victim, fakes, v_agent)
    h_inst, v_inst = h_evo["config"]["instance"], v_evo["config"]["instance"]

    def sbx_id() -> str:
        return f"sbx-{uuid.uuid4()}"

    poison = [  # each with the error code of its dead letter
        # Bodies the gateway would refuse: normalize's reader refuses them too.
        (
            raw_record(h_sbx, hostile.id, rb'{"from": "ana", "text": "oi\u0000"}', sbx_id()),
            "unsupported_character",
        ),
        (
            raw_record(
                h_evo,
                hostile.id,
                poisoned(evolution_body(h_inst, number(), "oi", pushName=X), X, rb"\ud800"),
            ),
            "unsupported_character",
        ),
        (
            raw_record(
                h_evo,
                hostile.id,
                json.dumps(evolution_body(h_inst, number(), "oi", n=float("nan"))).encode(),
            ),
            "invalid_json",
        ),
        # Readable, but PostgreSQL refuses them: the batch's statement fails, and the batch
        # goes through one record at a time. A NUL in the gateway's message id header:
        (
            raw_record(
                h_sbx, hostile.id, b'{"from": "ana", "text": "oi"}', f"sbx-\x00-{uuid.uuid4()}"
            ),
            "data_error",
        ),
        # A message id larger than an index row: ProgramLimitExceeded, an OperationalError
        # that once counted as transient and was retried for ever.
        (
            raw_record(
                h_evo,
                hostile.id,
                json.dumps(
                    evolution_body(
                        h_inst,
                        number(),
                        "oi",
                        key={
                            "remoteJid": f"{number()}@s.whatsapp.net",
                            "fromMe": False,
                            "id": secrets.token_hex(5000),
                        },
                    )
                ).encode(),
            ),
            "data_error",
        ),
    ]
    texts = [f"pergunta {i} {uuid.uuid4().hex[:6]}" for i in range(8)]
    records = []
    for i, text in enumerate(texts):
        if i % 2 == 0:
            body = json.dumps({"from": f"c{i}", "text": text}).encode()
            records.append(raw_record(v_sbx, victim.id, body, sbx_id())[0])
        else:
            body = json.dumps(evolution_body(v_inst, number(), text)).encode()
            records.append(raw_record(v_evo, victim.id, body)[0])
        if i < len(poison):
            records.append(poison[i][0][0])
    await produce(gateway.settings.broker_url or "", records)

    await answered_once(pool, victim.id, texts)
    codes = {trace: code for (_, trace), code in poison}
    letters = await dead_letters(gateway.settings.broker_url or "", set(codes), "normalize")
    assert sorted((d["trace_id"], d["error_code"]) for d in letters) == sorted(codes.items())
    for table in ("webhook_events", "messages"):
        sql = f"SELECT count(*) FROM {table} WHERE workspace_id = %s"
        assert await count_rows(pool, sql, hostile.id) == 0


def inbound(channel: dict, workspace_id: str, sender: str, text: str, **over: Any) -> bytes:
    """A canonical sandbox message as normalize produces it (``over``: fields replaced)."""
    pid = over.pop("pid", f"m-{uuid.uuid4().hex}")
    now = datetime.now(UTC)
    msg = InboundMessage(
        trace_id=secrets.token_hex(16),
        event_key=f"sbx:msg:{pid}",
        workspace_id=uuid.UUID(workspace_id),
        channel_id=uuid.UUID(channel["id"]),
        provider=ProviderName.SANDBOX,
        provider_message_id=pid,
        contact=ContactRef(external_id=sender, name=over.pop("name", None)),
        type="text",
        text=text,
        sent_at=now,
        received_at=now,
    )
    return msg.model_dump_json().encode()


async def test_poison_at_resolve_is_dead_lettered_alone(
    gateway: Gateway, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    hostile, victim = await make_tenant(gateway, "Hostile"), await make_tenant(gateway, "Victim")
    h_agent, v_agent = await make_agent(pool, hostile.id), await make_agent(pool, victim.id)
    h_sbx = await create_channel(gateway, hostile, "sandbox", {}, agent_id=h_agent)
    v_sbx = await create_channel(gateway, victim, "sandbox", {}, agent_id=v_agent)

    poison = [
        inbound(h_sbx, hostile.id, "ana", "oi\x00"),  # NUL in the text
        inbound(h_sbx, hostile.id, "bia", "oi", name="Bia\x00"),  # in the contact's name
        inbound(h_sbx, hostile.id, "c\x00a", "oi"),  # in the contact's id
        inbound(h_sbx, hostile.id, "duda", "oi", pid=secrets.token_hex(5000)),  # too large
        # A lone surrogate cannot even be read as the contract: dead-lettered on parse.
        inbound(h_sbx, hostile.id, "eva", f"oi {X}").replace(X.encode(), rb"\ud800"),
    ]
    texts = [f"pergunta {i} {uuid.uuid4().hex[:6]}" for i in range(8)]
    records = []
    for i, text in enumerate(texts):
        sender = f"c{i % 3}"  # a few conversations, each in order
        key = f"{v_sbx['id']}:{sender}".encode()
        records.append((MESSAGES_NORMALIZED, key, inbound(v_sbx, victim.id, sender, text), []))
        if i < len(poison):
            records.append((MESSAGES_NORMALIZED, f"{h_sbx['id']}:x".encode(), poison[i], []))
    await produce(gateway.settings.broker_url or "", records)

    await answered_once(pool, victim.id, texts)
    traces = {json.loads(p)["trace_id"] for p in poison}
    letters = await dead_letters(gateway.settings.broker_url or "", traces, "resolve")
    assert len(letters) == len(poison)
    assert (
        await count_rows(pool, "SELECT count(*) FROM messages WHERE workspace_id = %s", hostile.id)
        == 0
    )
