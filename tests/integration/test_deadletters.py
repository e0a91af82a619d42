"""Dead letters: kept in PostgreSQL, flagging the conversation, listed per workspace, and
replayed (REST and CLI) so that, once the cause is fixed, the message is answered once.

A reply the provider refuses for good (the fake Graph API's 400) is the failure that an
operator can fix (a token, a template) and replay: the send stage dead-letters it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool

from omnichat.settings import Settings
from streams.contracts import DeadLetter, RetrievedMessage
from streams.topics import bootstrap_servers
from tests.conftest import Fakes, Gateway, Tenant, make_tenant, wait_until
from tests.fakes.graph_api import graph_error
from tests.integration.helpers import create_channel, metric_total
from tests.integration.test_pipeline import (
    cloud_channel,
    cloud_text,
    make_agent,
    out_messages,
    post_cloud,
    sends_to,
)

METRIC = "omnichat_conversations_needing_attention_total"


async def deadletter_rows(pool: AsyncConnectionPool, workspace_id: str) -> list[dict]:
    """The workspace's dead letter rows, oldest first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM deadletters WHERE workspace_id = %s ORDER BY created_at",
            (workspace_id,),
        )
        return await cur.fetchall()


async def failed_send(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, fakes: Fakes, text: str
) -> tuple[dict, str, dict]:
    """A Cloud message whose reply the provider refuses for good: (channel, sender, row)."""
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5561{uuid.uuid4().int % 10**9:09d}"
    fakes.graph.enqueue(400, graph_error(131026, "Message undeliverable"))
    await post_cloud(gateway, ch["id"], cloud_text(ch["config"]["phone_number_id"], sender, text))

    async def kept() -> list[dict]:
        return [
            r for r in await deadletter_rows(pool, tenant.id) if str(r["channel_id"]) == ch["id"]
        ]

    row = (await wait_until(kept, timeout=60))[0]
    return ch, sender, row


async def sent_once(pool: AsyncConnectionPool, channel_id: str) -> list[dict]:
    """The channel's outbound rows once one of them is sent."""
    rows = await out_messages(pool, channel_id)
    return rows if rows and rows[0]["status"] == "sent" else []


async def test_a_refused_reply_is_kept_flagged_listed_and_replayed_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    before = await metric_total(worker.web_url, METRIC)
    ch, sender, row = await failed_send(gateway, tenant, pool, fakes, "Vocês abrem hoje?")
    assert row["stage"] == "send" and row["error_code"] == "131026"
    assert row["trace_id"] and row["trace_id"] != "unknown"
    assert row["failures"] == 1 and row["replay_count"] == 0
    [out] = await out_messages(pool, ch["id"])
    assert out["status"] == "failed"

    # The conversation waits for a person, in the API and the metric.
    conv_id = str(row["conversation_id"])
    status, conv = await gateway.call(
        "GET", f"/api/v1/conversations/{conv_id}", key=tenant.key, workspace=tenant.id
    )
    assert status == 200 and conv["needs_attention"] is True
    assert conv["attention_reason"] == "deadletter:send:131026"
    assert conv["attention_deadletter_id"] == str(row["id"])
    status, flagged = await gateway.call(
        "GET", "/api/v1/conversations/?needs_attention=true", key=tenant.key, workspace=tenant.id
    )
    assert [c["id"] for c in flagged["items"]] == [conv_id]
    assert await metric_total(worker.web_url, METRIC) >= before + 1

    # Listed for its workspace only, to admin keys only.
    status, listed = await gateway.call(
        "GET", "/api/v1/deadletters?stage=send", key=tenant.key, workspace=tenant.id
    )
    assert status == 200 and [d["id"] for d in listed["items"]] == [str(row["id"])]
    item = listed["items"][0]
    assert item["replayable"] is True and item["workspace_id"] == tenant.id
    assert item["payload"]["outbound_id"] == str(out["id"])
    since = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    status, none_since = await gateway.call(
        "GET",
        f"/api/v1/deadletters?since={since.replace('+', '%2B')}",
        key=tenant.key,
        workspace=tenant.id,
    )
    assert status == 200 and none_since["items"] == []
    other = await make_tenant(gateway, "Outra")
    status, theirs = await gateway.call(
        "GET", "/api/v1/deadletters", key=other.key, workspace=other.id
    )
    assert status == 200 and theirs["items"] == []
    for method, path in [
        ("GET", f"/api/v1/deadletters/{row['id']}"),
        ("POST", f"/api/v1/deadletters/{row['id']}/replay"),
    ]:
        assert (await gateway.call(method, path, key=other.key, workspace=other.id))[0] == 404
    status, read_key = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "leitura", "scopes": ["read"]},
    )
    assert status == 201
    for path in ("/api/v1/deadletters", f"/api/v1/deadletters/{row['id']}"):
        status, body = await gateway.call("GET", path, key=read_key["key"], workspace=tenant.id)
        assert status == 403 and body["error"]["code"] == "insufficient_scope"

    # The cause is fixed (the fake provider answers 200 again): the replay answers once.
    status, replayed = await gateway.call(
        "POST", f"/api/v1/deadletters/{row['id']}/replay", key=tenant.key, workspace=tenant.id
    )
    assert status == 202, replayed
    assert replayed["replay"]["topic"] == "messages.send" and replayed["replay_count"] == 1
    rows = await wait_until(lambda: sent_once(pool, ch["id"]), timeout=60)
    assert len(rows) == 1 and rows[0]["id"] == out["id"]
    status, conv = await gateway.call(
        "GET", f"/api/v1/conversations/{conv_id}", key=tenant.key, workspace=tenant.id
    )
    assert conv["needs_attention"] is False and conv["attention_reason"] is None

    # A second replay changes nothing: the reply was delivered, and is never again.
    status, again = await gateway.call(
        "POST", f"/api/v1/deadletters/{row['id']}/replay", key=tenant.key, workspace=tenant.id
    )
    assert status == 202 and again["replay_count"] == 2
    await asyncio.sleep(3)
    assert len(sends_to(fakes.graph, sender)) == 2  # the refused one, the one delivered
    assert [r["status"] for r in await out_messages(pool, ch["id"])] == ["sent"]
    assert len(await deadletter_rows(pool, tenant.id)) == 1


async def test_the_cli_lists_and_replays_dead_letters(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    worker: Any,
    fakes: Fakes,
    settings: Settings,
) -> None:
    ch, sender, row = await failed_send(gateway, tenant, pool, fakes, "Tem pão de queijo?")
    code, out = await cli(settings, "deadletters", "list", "--workspace", tenant.id)
    assert code == 0 and str(row["id"]) in out and "\tsend\t131026\t" in out
    code, out = await cli(settings, "deadletters", "replay", "--all", "--workspace", tenant.id)
    assert code == 0 and f"{row['id']}\treplayed to messages.send" in out
    rows = await wait_until(lambda: sent_once(pool, ch["id"]), timeout=60)
    assert len(rows) == 1
    # Replayed since it failed: --all leaves it alone; by id it goes again, answered still once.
    code, out = await cli(settings, "deadletters", "replay", "--all", "--workspace", tenant.id)
    assert code == 0 and out == ""
    code, out = await cli(settings, "deadletters", "replay", str(row["id"]), str(uuid.uuid4()))
    assert code == 1 and "replays=2" in out and "not found" in out
    await asyncio.sleep(3)
    assert len(sends_to(fakes.graph, sender)) == 2
    assert [r["status"] for r in await out_messages(pool, ch["id"])] == ["sent"]


async def test_a_generate_dead_letter_is_replayed_to_its_workspace_partition(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    worker: Any,
    settings: Settings,
) -> None:
    # A message stored without an answer (no agent yet), then handed to generate by a
    # dead letter as the generate stage would have written it.
    ch = await create_channel(gateway, tenant, "sandbox", {})
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{ch['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"from": "cliente-dl", "text": "Qual o preço do café?"},
    )
    assert status == 200
    inbound = await wait_until(lambda: inbound_row(pool, ch["id"]), timeout=60)
    agent_id = await make_agent(pool, tenant.id)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT published_version_id FROM agents WHERE id = %s", (agent_id,)
        )
        version_id = (await cur.fetchone())["published_version_id"]
    event = RetrievedMessage(
        trace_id="trace-dl-generate",
        workspace_id=tenant.id,
        channel_id=ch["id"],
        provider="sandbox",
        contact_id=inbound["contact_id"],
        contact_external_id="cliente-dl",
        conversation_id=inbound["conversation_id"],
        message_id=inbound["id"],
        text=inbound["text"],
        type="text",
        agent_id=agent_id,
        agent_version_id=version_id,
        received_at=datetime.now(UTC),
    )
    raw = event.model_dump_json()
    await produce_dead(
        settings,
        DeadLetter(
            trace_id=event.trace_id,
            stage="generate",
            reason="RuntimeError: forced",
            error_code="internal_error",
            workspace_id=event.workspace_id,
            channel_id=event.channel_id,
            payload=raw,
        ),
        DeadLetter(  # the same failure again, as a replayed batch would send it
            trace_id=event.trace_id,
            stage="generate",
            reason="RuntimeError: forced",
            error_code="internal_error",
            workspace_id=event.workspace_id,
            channel_id=event.channel_id,
            payload=raw,
            failed_at=datetime(2020, 1, 1, tzinfo=UTC),
        ),
        DeadLetter(
            trace_id="trace-dl-normalize",
            stage="normalize",
            reason="unreadable webhook",
            error_code="invalid_json",
            workspace_id=event.workspace_id,
            channel_id=event.channel_id,
            payload="{not json",
        ),
    )

    async def both() -> list[dict]:
        rows = await deadletter_rows(pool, tenant.id)
        return rows if len(rows) == 2 else []

    rows = {r["stage"]: r for r in await wait_until(both, timeout=60)}
    dead = rows["generate"]
    assert dead["failures"] == 1 and str(dead["conversation_id"]) == str(inbound["conversation_id"])
    status, conv = await gateway.call(
        "GET",
        f"/api/v1/conversations/{inbound['conversation_id']}",
        key=tenant.key,
        workspace=tenant.id,
    )
    assert conv["needs_attention"] is True and conv["attention_reason"].startswith(
        "deadletter:generate"
    )
    status, body = await gateway.call(
        "POST",
        f"/api/v1/deadletters/{rows['normalize']['id']}/replay",
        key=tenant.key,
        workspace=tenant.id,
    )
    assert status == 409 and body["error"]["code"] == "not_replayable"

    status, replayed = await gateway.call(
        "POST", f"/api/v1/deadletters/{dead['id']}/replay", key=tenant.key, workspace=tenant.id
    )
    assert status == 202, replayed
    assert replayed["replay"]["topic"] == "messages.retrieved"
    assert replayed["replay"]["partition"] is not None
    rows_out = await wait_until(lambda: sent_once(pool, ch["id"]), timeout=60)
    assert len(rows_out) == 1 and rows_out[0]["in_reply_to"] == inbound["id"]
    # A human reply also clears a flag: flag it by hand, then answer.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE conversations SET needs_attention = true, attention_reason = 'x' WHERE id = %s",
            (inbound["conversation_id"],),
        )
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/conversations/{inbound['conversation_id']}/messages",
        key=tenant.key,
        workspace=tenant.id,
        json={"text": "Já te respondo!"},
    )
    assert status == 202
    status, conv = await gateway.call(
        "GET",
        f"/api/v1/conversations/{inbound['conversation_id']}",
        key=tenant.key,
        workspace=tenant.id,
    )
    assert conv["needs_attention"] is False


async def test_patch_clears_needs_attention(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any
) -> None:
    ch = await create_channel(gateway, tenant, "sandbox", {})
    await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{ch['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"from": "cliente-patch", "text": "Oi"},
    )
    inbound = await wait_until(lambda: inbound_row(pool, ch["id"]), timeout=60)
    conv_id = inbound["conversation_id"]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE conversations SET needs_attention = true, attention_reason = 'x' WHERE id = %s",
            (conv_id,),
        )
    path = f"/api/v1/conversations/{conv_id}"
    for bad in ({"needs_attention": True}, {"needs_attention": None}):
        status, _ = await gateway.call("PATCH", path, key=tenant.key, workspace=tenant.id, json=bad)
        assert status == 422
    status, conv = await gateway.call(
        "PATCH", path, key=tenant.key, workspace=tenant.id, json={"needs_attention": False}
    )
    assert status == 200 and conv["needs_attention"] is False
    assert conv["attention_reason"] is None


async def inbound_row(pool: AsyncConnectionPool, channel_id: str) -> dict | None:
    """The channel's first inbound message, once stored."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.*, c.contact_id FROM messages m"
            " JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.channel_id = %s AND m.direction = 'in' ORDER BY m.created_at LIMIT 1",
            (channel_id,),
        )
        return await cur.fetchone()


async def produce_dead(settings: Settings, *letters: DeadLetter) -> None:
    """Put dead letters on the topic, as the stages do."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker_url or ""), acks="all"
    )
    await producer.start()
    try:
        for letter in letters:
            await producer.send_and_wait(
                "deadletter", letter.model_dump_json().encode(), key=letter.stage.encode()
            )
    finally:
        await producer.stop()


async def cli(settings: Settings, *args: str) -> tuple[int, str]:
    """``omnichat ARGS`` against the session's database and broker: (exit code, stdout)."""
    env = dict(os.environ)
    env.update(
        {
            "OMNICHAT_DATABASE_URL": settings.database_url or "",
            "OMNICHAT_BROKER_URL": settings.broker_url or "",
            "OMNICHAT_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "OMNICHAT_LOG_LEVEL": "WARNING",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnichat.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    if proc.returncode not in (0, 1):
        raise AssertionError(err.decode())
    return proc.returncode, out.decode()
