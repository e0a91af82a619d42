"""The pipeline end to end: webhook in → grounded answer out, once, through the real stack.

The worker is a real ``omnichat worker`` process; Meta's Graph API, Evolution and the
LLM are local HTTP servers speaking their wire formats (tests/fakes/).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from storage import agents
from tests.conftest import Fakes, Gateway, Tenant, wait_until
from tests.fakes.evolution_api import DEFAULT_API_KEY as EVO_KEY
from tests.fakes.graph_api import DEFAULT_ACCESS_TOKEN, graph_error
from tests.integration.helpers import count_rows, create_channel, read_topic, sign

APP_SECRET = "pipeline-app-secret"


async def make_agent(pool: AsyncConnectionPool, workspace_id: str, **fields: Any) -> str:
    """An agent with a published version."""
    async with pool.connection() as conn, conn.transaction():
        agent = await agents.create_agent(
            conn, workspace_id=uuid.UUID(workspace_id), name="Atendente", description=None
        )
        version = await agents.create_version(
            conn,
            workspace_id=uuid.UUID(workspace_id),
            agent_id=agent["id"],
            fields={"system_prompt": "Você é o atendente da Padaria.", **fields},
        )
        await agents.publish_version(
            conn,
            workspace_id=uuid.UUID(workspace_id),
            agent_id=agent["id"],
            version_id=version["id"],
        )
    return str(agent["id"])


async def cloud_channel(
    gw: Gateway,
    tenant: Tenant,
    fakes: Fakes,
    agent_id: str | None,
    phone_number_id: str | None = None,
) -> dict:
    """A Cloud API channel pointed at the fake Graph API."""
    config = {
        "phone_number_id": phone_number_id or f"1065{uuid.uuid4().int % 10**8}",
        "access_token": DEFAULT_ACCESS_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": "v",
        "base_url": fakes.graph.base_url,
    }
    return await create_channel(gw, tenant, "whatsapp_cloud", config, agent_id=agent_id)


def cloud_text(
    phone_number_id: str,
    sender: str,
    text: str,
    wamid: str | None = None,
    name: str = "Maria Silva",
) -> bytes:
    """A WhatsApp Cloud text webhook."""
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": phone_number_id,
                                },
                                "contacts": [{"profile": {"name": name}, "wa_id": sender}],
                                "messages": [
                                    {
                                        "from": sender,
                                        "id": wamid or f"wamid.{uuid.uuid4().hex}",
                                        "timestamp": str(int(time.time())),
                                        "type": "text",
                                        "text": {"body": text},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        },
        ensure_ascii=False,
    ).encode()


async def post_cloud(gw: Gateway, channel_id: str, body: bytes) -> dict:
    """Deliver a signed Cloud webhook; assert it was accepted."""
    status, answer = await gw.call(
        "POST",
        f"/api/v1/webhooks/whatsapp/{channel_id}",
        data=body,
        headers={"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"},
    )
    assert status == 200, answer
    return answer


def sends_to(fake: Any, recipient: str) -> list[Any]:
    """Requests the fake provider got for one recipient."""
    return [
        r for r in fake.requests if r.json and r.json.get("to", r.json.get("number")) == recipient
    ]


async def out_messages(pool: AsyncConnectionPool, channel_id: str) -> list[dict]:
    """Outbound messages of a channel, oldest first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM messages WHERE channel_id = %s AND direction = 'out'"
            " ORDER BY created_at, id",
            (channel_id,),
        )
        return await cur.fetchall()


async def test_cloud_text_gets_exactly_one_reply(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    phone_id = ch["config"]["phone_number_id"]
    sender = f"5511{uuid.uuid4().int % 10**9:09d}"
    body = cloud_text(phone_id, sender, "Vocês têm pão de queijo sem glúten?")
    answer = await post_cloud(gateway, ch["id"], body)
    await post_cloud(gateway, ch["id"], body)  # a duplicate delivery

    async def sent() -> list[dict]:
        rows = await out_messages(pool, ch["id"])
        return rows if rows and rows[0]["status"] == "sent" else []

    rows = await wait_until(sent, timeout=60)
    await asyncio.sleep(1.5)  # room for a wrong second reply to show up
    calls = sends_to(fakes.graph, sender)
    assert len(calls) == 1
    call = calls[0]
    assert call.path == f"/v23.0/{phone_id}/messages"
    assert call.headers["Authorization"] == f"Bearer {DEFAULT_ACCESS_TOKEN}"
    assert (
        call.json["text"]["body"] == "Resposta simulada para: Vocês têm pão de queijo sem glúten?"
    )
    assert len(await out_messages(pool, ch["id"])) == 1
    reply = rows[0]
    assert reply["author"] == "bot" and reply["provider_message_id"] in fakes.graph.issued_ids
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.trace_id, m.text, r.model, r.prompt_tokens, r.completion_tokens, r.outcome,"
            " r.latency_ms FROM messages m JOIN agent_runs r ON r.message_id = m.id"
            " WHERE m.channel_id = %s AND m.direction = 'in'",
            (ch["id"],),
        )
        runs = await cur.fetchall()
    assert len(runs) == 1
    run = runs[0]
    assert run["outcome"] == "ok" and run["prompt_tokens"] > 0 and run["completion_tokens"] > 0
    assert run["trace_id"] == answer["trace_id"] == reply["trace_id"]
    assert run["text"] == "Vocês têm pão de queijo sem glúten?"


async def test_evolution_and_sandbox_reply(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    evo = await create_channel(
        gateway,
        tenant,
        "evolution",
        {
            "base_url": fakes.evolution.base_url,
            "instance": "loja1",
            "api_key": EVO_KEY,
            "webhook_token": "hook-token",
        },
        agent_id=agent_id,
    )
    number = f"5521{uuid.uuid4().int % 10**9:09d}"
    body = {
        "event": "messages.upsert",
        "instance": "loja1",
        "data": {
            "key": {
                "remoteJid": f"{number}@s.whatsapp.net",
                "fromMe": False,
                "id": uuid.uuid4().hex[:20].upper(),
            },
            "pushName": "João",
            "message": {"conversation": "Qual o horário de domingo?"},
            "messageType": "conversation",
            "messageTimestamp": int(time.time()),
        },
    }
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/webhooks/evolution/{evo['id']}",
        json=body,
        headers={"Authorization": "Bearer hook-token"},
    )
    assert status == 200
    sandbox = await create_channel(gateway, tenant, "sandbox", {}, agent_id=agent_id)
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{sandbox['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"from": "tester", "text": "Oi, tudo bem?"},
    )
    assert status == 200

    async def both() -> bool:
        evo_rows = await out_messages(pool, evo["id"])
        sbx_rows = await out_messages(pool, sandbox["id"])
        return bool(
            evo_rows
            and evo_rows[0]["status"] == "sent"
            and sbx_rows
            and sbx_rows[0]["status"] == "sent"
        )

    await wait_until(both, timeout=60)
    calls = sends_to(fakes.evolution, number)
    assert len(calls) == 1
    assert calls[0].path == "/message/sendText/loja1"
    assert calls[0].json["text"] == "Resposta simulada para: Qual o horário de domingo?"
    sbx = await out_messages(pool, sandbox["id"])
    assert sbx[0]["text"] == "Resposta simulada para: Oi, tudo bem?"
    assert sbx[0]["provider_message_id"].startswith("sandbox-")


async def test_human_mode_and_own_echo_get_no_reply(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    evo = await create_channel(
        gateway,
        tenant,
        "evolution",
        {
            "base_url": fakes.evolution.base_url,
            "instance": "loja2",
            "api_key": EVO_KEY,
            "webhook_token": "hook-token-2",
        },
        agent_id=agent_id,
    )
    number = f"5531{uuid.uuid4().int % 10**9:09d}"

    def upsert(text: str, from_me: bool, msg_id: str | None = None) -> dict:
        return {
            "event": "MESSAGES_UPSERT",
            "instance": "loja2",
            "data": {
                "key": {
                    "remoteJid": f"{number}@s.whatsapp.net",
                    "fromMe": from_me,
                    "id": msg_id or uuid.uuid4().hex[:20].upper(),
                },
                "pushName": "Ana",
                "message": {"conversation": text},
                "messageTimestamp": int(time.time()),
            },
        }

    async def post(body: dict) -> None:
        status, _ = await gateway.call(
            "POST",
            f"/api/v1/webhooks/evolution/{evo['id']}",
            json=body,
            headers={"Authorization": "Bearer hook-token-2"},
        )
        assert status == 200

    await post(upsert("Olá", False))

    async def replied() -> list[dict]:
        rows = [r for r in await out_messages(pool, evo["id"]) if r["author"] == "bot"]
        return rows if rows and rows[0]["provider_message_id"] else []

    bot = (await wait_until(replied, timeout=60))[0]
    # Our own reply echoed back (fromMe, with the id we stored): never answered, not human.
    await post(upsert(bot["text"], True, bot["provider_message_id"]))
    # A person answers from the phone: stored as human, conversation switches to human mode.
    await post(upsert("Aqui é a Carla, já te respondo!", True))

    async def human() -> bool:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT mode FROM conversations WHERE channel_id = %s", (evo["id"],)
            )
            row = await cur.fetchone()
        return row is not None and row["mode"] == "human"

    await wait_until(human, timeout=60)
    await post(upsert("Obrigada!", False))  # in human mode: stored, not answered

    async def stored() -> bool:
        return (
            await count_rows(
                pool,
                "SELECT count(*) FROM messages WHERE channel_id = %s AND direction = 'in'",
                evo["id"],
            )
            == 2
        )

    await wait_until(stored, timeout=60)
    await asyncio.sleep(1.5)
    assert len(sends_to(fakes.evolution, number)) == 1
    rows = await out_messages(pool, evo["id"])
    assert [(r["author"], r["text"]) for r in rows] == [
        ("bot", bot["text"]),
        ("human", "Aqui é a Carla, já te respondo!"),
    ]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT action FROM audit_log WHERE workspace_id = %s", (tenant.id,)
        )
        actions = {r["action"] for r in await cur.fetchall()}
    assert "conversation.human_takeover" in actions


async def test_provider_429_then_200_sends_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5541{uuid.uuid4().int % 10**9:09d}"
    fakes.graph.enqueue(429, graph_error(130429, "(#130429) Rate limit hit"), {"Retry-After": "1"})
    await post_cloud(
        gateway, ch["id"], cloud_text(ch["config"]["phone_number_id"], sender, "Tem entrega?")
    )

    async def sent() -> bool:
        rows = await out_messages(pool, ch["id"])
        return bool(rows) and rows[0]["status"] == "sent"

    await wait_until(sent, timeout=60)
    calls = sends_to(fakes.graph, sender)
    assert len(calls) == 2  # the 429, then the one that went out
    assert fakes.graph.pending_answers == 0
    assert len(await out_messages(pool, ch["id"])) == 1


async def test_permanent_error_fails_and_dead_letters(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5551{uuid.uuid4().int % 10**9:09d}"
    fakes.graph.enqueue(400, graph_error(131026, "Message undeliverable"))
    await post_cloud(gateway, ch["id"], cloud_text(ch["config"]["phone_number_id"], sender, "Oi"))

    async def failed() -> list[dict]:
        rows = await out_messages(pool, ch["id"])
        return rows if rows and rows[0]["status"] == "failed" else []

    rows = await wait_until(failed, timeout=60)
    # Our code; Meta's numeric code named in our own text, Meta's words nowhere.
    assert rows[0]["error_code"] == "provider_rejected"
    assert "131026" in rows[0]["error_message"]
    assert "undeliverable" not in rows[0]["error_message"]
    assert len(sends_to(fakes.graph, sender)) == 1

    async def dead() -> list[Any]:
        recs = await read_topic(gateway.settings.broker_url or "", "deadletter")
        return [json.loads(r.value) for r in recs if str(rows[0]["id"]) in r.value.decode()]

    letter = (await wait_until(dead, timeout=30))[0]
    assert letter["stage"] == "send" and letter["error_code"] == "provider_rejected"


async def test_statuses_out_of_order_end_at_highest(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    phone_id = ch["config"]["phone_number_id"]
    sender = f"5561{uuid.uuid4().int % 10**9:09d}"
    await post_cloud(gateway, ch["id"], cloud_text(phone_id, sender, "Bom dia"))

    async def sent() -> list[dict]:
        rows = await out_messages(pool, ch["id"])
        return rows if rows and rows[0]["provider_message_id"] else []

    wamid = (await wait_until(sent, timeout=60))[0]["provider_message_id"]
    for status in ("read", "sent", "delivered"):
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": "1",
                        "changes": [
                            {
                                "field": "messages",
                                "value": {
                                    "messaging_product": "whatsapp",
                                    "metadata": {
                                        "display_phone_number": "1",
                                        "phone_number_id": phone_id,
                                    },
                                    "statuses": [
                                        {
                                            "id": wamid,
                                            "status": status,
                                            "timestamp": str(int(time.time())),
                                            "recipient_id": sender,
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
            }
        ).encode()
        await post_cloud(gateway, ch["id"], body)

    async def three_rows() -> bool:
        return (
            await count_rows(
                pool,
                "SELECT count(*) FROM webhook_events WHERE channel_id = %s"
                " AND normalized IS NOT NULL",
                ch["id"],
            )
            == 4
        )

    await wait_until(three_rows, timeout=60)
    await asyncio.sleep(1.0)
    rows = await out_messages(pool, ch["id"])
    assert rows[0]["status"] == "read"


async def test_twenty_quick_messages_keep_their_order(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5571{uuid.uuid4().int % 10**9:09d}"
    texts = [f"Mensagem número {i}" for i in range(20)]
    for text in texts:
        await post_cloud(
            gateway, ch["id"], cloud_text(ch["config"]["phone_number_id"], sender, text)
        )

    async def all_sent() -> bool:
        return len(sends_to(fakes.graph, sender)) >= 20

    await wait_until(all_sent, timeout=90)
    got = [r.json["text"]["body"] for r in sends_to(fakes.graph, sender)]
    assert got == [f"Resposta simulada para: {t}" for t in texts]


async def test_worker_killed_after_generate_replies_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5581{uuid.uuid4().int % 10**9:09d}"
    await post_cloud(
        gateway, ch["id"], cloud_text(ch["config"]["phone_number_id"], sender, "Aceitam Pix?")
    )

    async def generated() -> bool:
        return (
            await count_rows(
                pool,
                "SELECT count(*) FROM agent_runs r JOIN messages m ON m.id = r.message_id"
                " WHERE m.channel_id = %s",
                ch["id"],
            )
            == 1
        )

    await wait_until(generated, timeout=60, interval=0.02)
    worker.stop(signal.SIGKILL)
    worker.start()  # same consumer group: picks up what the dead one had not committed

    async def sent() -> bool:
        rows = await out_messages(pool, ch["id"])
        return bool(rows) and rows[0]["status"] == "sent"

    await wait_until(sent, timeout=120)
    await asyncio.sleep(2.0)
    runs = await count_rows(
        pool,
        "SELECT count(*) FROM agent_runs r JOIN messages m"
        " ON m.id = r.message_id WHERE m.channel_id = %s",
        ch["id"],
    )
    assert runs == 1
    assert len(await out_messages(pool, ch["id"])) == 1
    assert len(sends_to(fakes.graph, sender)) == 1

    async def usage_counted() -> dict | None:  # the replay after the kill counts nothing twice
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM usage_records WHERE workspace_id = %s", (tenant.id,)
            )
            row = await cur.fetchone()
        return row if row and row["outbound_messages"] >= 1 else None

    await wait_until(usage_counted, timeout=30)
    await asyncio.sleep(1.0)
    row = await usage_counted()
    assert row is not None and (row["inbound_messages"], row["outbound_messages"]) == (1, 1)


async def test_outside_24h_window_is_blocked_and_audited(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5591{uuid.uuid4().int % 10**9:09d}"
    body = json.loads(cloud_text(ch["config"]["phone_number_id"], sender, "Ainda tem bolo?"))
    old = str(int(time.time()) - 25 * 3600)  # delivered late: the window closed meanwhile
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = old
    await post_cloud(gateway, ch["id"], json.dumps(body).encode())

    async def blocked() -> list[dict]:
        rows = await out_messages(pool, ch["id"])
        return rows if rows and rows[0]["status"] == "blocked" else []

    rows = await wait_until(blocked, timeout=60)
    assert rows[0]["error_code"] == "outside_window"
    assert sends_to(fakes.graph, sender) == []

    async def audited() -> bool:
        return (
            await count_rows(
                pool,
                "SELECT count(*) FROM audit_log WHERE object_id = %s"
                " AND action = 'message.blocked_outside_window'",
                str(rows[0]["id"]),
            )
            == 1
        )

    await wait_until(audited, timeout=30)


async def test_usage_records_count_the_conversation(
    gateway: Gateway, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    from tests.conftest import make_tenant

    tenant = await make_tenant(gateway, "Usage")
    agent_id = await make_agent(pool, tenant.id)
    sandbox = await create_channel(gateway, tenant, "sandbox", {}, agent_id=agent_id)
    for text in ("Oi!", "Qual o preço do café?"):
        status, _ = await gateway.call(
            "POST",
            f"/api/v1/webhooks/sandbox/{sandbox['id']}",
            key=tenant.key,
            workspace=tenant.id,
            json={"from": "usage-contact", "text": text},
        )
        assert status == 200

    async def counted() -> dict | None:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM usage_records WHERE workspace_id = %s", (tenant.id,)
            )
            row = await cur.fetchone()
        return row if row and row["outbound_messages"] == 2 else None

    row = await wait_until(counted, timeout=60)
    assert row["inbound_messages"] == 2
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sum(prompt_tokens) AS p, sum(completion_tokens) AS c FROM agent_runs"
            " WHERE workspace_id = %s",
            (tenant.id,),
        )
        tokens = await cur.fetchone()
    assert row["llm_prompt_tokens"] == tokens["p"] > 0
    assert row["llm_completion_tokens"] == tokens["c"] > 0


async def test_human_reply_from_the_api_is_delivered_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5599{uuid.uuid4().int % 10**9:09d}"
    await post_cloud(
        gateway,
        ch["id"],
        cloud_text(ch["config"]["phone_number_id"], sender, "Quero falar com uma pessoa"),
    )

    async def conversation() -> str | None:
        _, page = await gateway.call(
            "GET",
            f"/api/v1/conversations/?channel_id={ch['id']}",
            key=tenant.key,
            workspace=tenant.id,
        )
        return page["items"][0]["id"] if page["items"] else None

    conv = await wait_until(conversation, timeout=60)
    status, _ = await gateway.call(
        "PATCH",
        f"/api/v1/conversations/{conv}",
        key=tenant.key,
        workspace=tenant.id,
        json={"mode": "human"},
    )
    assert status == 200
    status, reply = await gateway.call(
        "POST",
        f"/api/v1/conversations/{conv}/messages",
        key=tenant.key,
        workspace=tenant.id,
        json={"text": "Oi! Aqui é a Júlia, como posso ajudar?"},
    )
    assert status == 202

    async def delivered() -> list[Any]:
        return [
            r
            for r in sends_to(fakes.graph, sender)
            if r.json["text"]["body"] == "Oi! Aqui é a Júlia, como posso ajudar?"
        ]

    await wait_until(delivered, timeout=60)

    async def sent() -> bool:
        return (
            await count_rows(
                pool, "SELECT count(*) FROM messages WHERE id = %s AND status = 'sent'", reply["id"]
            )
            == 1
        )

    await wait_until(sent, timeout=30)
    await asyncio.sleep(1.0)
    assert len(await delivered()) == 1


async def test_omnichat_chat_talks_through_the_pipeline(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await create_channel(gateway, tenant, "sandbox", {}, agent_id=agent_id)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnichat.cli",
        "chat",
        "--url",
        gateway.url,
        "--workspace",
        tenant.id,
        "--key",
        tenant.key,
        "--channel",
        ch["id"],
        "--contact",
        "terminal-1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate("Bom dia, tudo bem?\nVocês abrem hoje?\n".encode()), 120
    )
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines == [
        "agente> Resposta simulada para: Bom dia, tudo bem?",
        "agente> Resposta simulada para: Vocês abrem hoje?",
    ]
