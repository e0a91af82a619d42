"""The batch stage functions against PostgreSQL: the same rows and decisions as one by one.

resolve_batch, prepare_replies and deliver_batch do per batch what resolve, prepare_reply
and deliver do per message; these tests give them batches mixing conversations, replays
and a human takeover, and check each conversation keeps its order.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from psycopg_pool import AsyncConnectionPool

from agents_pipeline.providers.sandbox import SandboxProvider
from agents_pipeline.reply import prepare_replies
from agents_pipeline.resolve import resolve
from agents_pipeline.resolve_batch import resolve_batch
from agents_pipeline.send import SendPolicy, deliver_batch
from storage import agents, bulk, messages
from storage.secrets import SecretBox
from streams.contracts import ContactRef, GeneratedReply, InboundMessage, ProviderName
from tests.conftest import Gateway, Tenant
from tests.integration.helpers import create_channel

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def sandbox_channel(gw: Gateway, tenant: Tenant, pool: AsyncConnectionPool) -> dict:
    """A sandbox channel bound to an agent with a published version."""
    ws = uuid.UUID(tenant.id)
    async with pool.connection() as conn, conn.transaction():
        agent = await agents.create_agent(conn, workspace_id=ws, name="Bot", description=None)
        version = await agents.create_version(
            conn, workspace_id=ws, agent_id=agent["id"], fields={"system_prompt": "Oi"}
        )
        await agents.publish_version(
            conn, workspace_id=ws, agent_id=agent["id"], version_id=version["id"]
        )
    return await create_channel(gw, tenant, "sandbox", {}, agent_id=str(agent["id"]))


def in_workspace(channel: dict, tenant: Tenant) -> dict:
    """The channel as the API gave it, with its workspace id."""
    return {**channel, "workspace_id": tenant.id}


def inbound(
    channel: dict,
    sender: str,
    text: str,
    *,
    n: int,
    pid: str | None = None,
    alt_ids: list[str] | None = None,
    from_me: bool = False,
    name: str | None = None,
) -> InboundMessage:
    """A canonical sandbox message sent ``n`` seconds after T0."""
    pid = pid or f"m-{uuid.uuid4().hex[:10]}"
    return InboundMessage(
        trace_id=f"t-{pid}",
        event_key=f"sbx:msg:{pid}",
        workspace_id=channel["workspace_id"],
        channel_id=channel["id"],
        provider=ProviderName.SANDBOX,
        provider_message_id=pid,
        from_me=from_me,
        contact=ContactRef(external_id=sender, alt_ids=alt_ids or [], name=name),
        type="text",
        text=text,
        sent_at=T0 + timedelta(seconds=n),
        received_at=T0 + timedelta(seconds=n),
    )


async def run_batch(pool: AsyncConnectionPool, msgs: list[InboundMessage]) -> list[Any]:
    async with pool.connection() as conn, conn.transaction():
        return await resolve_batch(conn, msgs, takeover_seconds=600, now=datetime.now(UTC))


async def rows(pool: AsyncConnectionPool, sql: str, *params: Any) -> list[dict]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def test_resolve_batch_keeps_each_conversation_in_order(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    batch = [
        inbound(ch, a, "a1", n=1),
        inbound(ch, b, "b1", n=2),
        inbound(ch, a, "a2", n=3),
        inbound(ch, a, "a3", n=4),
        inbound(ch, b, "b2", n=5),
    ]
    outcomes = await run_batch(pool, batch)

    assert [o.reason for o in outcomes] == ["answer"] * 5
    assert all(o.created for o in outcomes)
    assert [o.resolved.text for o in outcomes] == ["a1", "b1", "a2", "a3", "b2"]
    conv_a = {outcomes[i].conversation_id for i in (0, 2, 3)}
    conv_b = {outcomes[i].conversation_id for i in (1, 4)}
    assert len(conv_a) == len(conv_b) == 1 and conv_a != conv_b
    stored = await rows(
        pool,
        "SELECT text FROM messages WHERE conversation_id = %s ORDER BY created_at, id",
        conv_a.pop(),
    )
    assert [r["text"] for r in stored] == ["a1", "a2", "a3"]
    # The third message's history holds the first two, in order (history orders by created_at).
    async with pool.connection() as conn:
        hist = await messages.history(
            conn,
            workspace_id=uuid.UUID(tenant.id),
            conversation_id=outcomes[3].conversation_id,
            before_message=outcomes[3].message_id,
        )
    assert [h["text"] for h in hist] == ["a1", "a2"]
    conv = await rows(
        pool, "SELECT last_inbound_at FROM conversations WHERE id = %s", outcomes[4].conversation_id
    )
    assert conv[0]["last_inbound_at"] == T0 + timedelta(seconds=5)


async def test_resolve_batch_replays_and_duplicates(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    first = inbound(ch, "c-1", "oi", n=1)
    second = inbound(ch, "c-1", "tudo bem?", n=2)
    outcomes = await run_batch(pool, [first, second, first])  # a copy within the batch
    assert [o.created for o in outcomes] == [True, True, False]
    assert outcomes[2].message_id == outcomes[0].message_id
    assert outcomes[2].reason == "answer"  # not answered yet: forwarded again, never lost

    async with pool.connection() as conn:
        await messages.insert_bot_reply(
            conn,
            workspace_id=uuid.UUID(tenant.id),
            channel_id=uuid.UUID(ch["id"]),
            conversation_id=outcomes[0].conversation_id,
            in_reply_to=outcomes[0].message_id,
            text="Olá!",
            trace_id="t",
        )
    again = await run_batch(pool, [first, second])
    assert [(o.reason, o.created) for o in again] == [
        ("already_answered", False),
        ("answer", False),
    ]
    # The reply is found only within its own workspace, one message at a time or per batch.
    ws, other, replied_to = uuid.UUID(tenant.id), uuid.uuid4(), outcomes[0].message_id
    async with pool.connection() as conn:
        assert await messages.has_bot_reply(conn, workspace_id=ws, in_reply_to=replied_to)
        assert not await messages.has_bot_reply(conn, workspace_id=other, in_reply_to=replied_to)
        pairs = [(ws, replied_to), (other, replied_to), (ws, outcomes[1].message_id)]
        assert await bulk.bot_replied(conn, pairs) == {replied_to}
        assert await bulk.bot_replied(conn, [(other, replied_to)]) == set()
    count = await rows(
        pool,
        "SELECT count(*) AS n FROM messages WHERE channel_id = %s AND direction = 'in'",
        ch["id"],
    )
    assert count[0]["n"] == 2


async def test_resolve_batch_one_contact_for_two_identifiers(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    outcomes = await run_batch(
        pool,
        [
            inbound(ch, "5511999990000", "oi", n=1, alt_ids=["lid-77"], name="Ana"),
            inbound(ch, "lid-77", "alô", n=2, name="Ana Maria"),
        ],
    )
    assert outcomes[0].conversation_id == outcomes[1].conversation_id
    found = await rows(
        pool, "SELECT external_id, alt_ids, name FROM contacts WHERE channel_id = %s", ch["id"]
    )
    assert found == [{"external_id": "5511999990000", "alt_ids": ["lid-77"], "name": "Ana Maria"}]
    # A later batch merges a new identifier into the same contact.
    later = await run_batch(pool, [inbound(ch, "lid-77", "?", n=3, alt_ids=["u-9"])])
    assert later[0].conversation_id == outcomes[0].conversation_id
    found = await rows(pool, "SELECT alt_ids FROM contacts WHERE channel_id = %s", ch["id"])
    assert found == [{"alt_ids": ["lid-77", "u-9"]}]


async def test_resolve_batch_human_takeover_mid_batch(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    batch = [
        inbound(ch, "h-1", "preciso de ajuda", n=1),
        inbound(ch, "other", "oi", n=2),
        inbound(ch, "h-1", "Oi, aqui é a Joana", n=3, from_me=True),
        inbound(ch, "h-1", "obrigado", n=4),
    ]
    outcomes = await run_batch(pool, batch)
    assert [o.reason for o in outcomes] == ["answer", "answer", "human_takeover", "human_mode"]
    assert outcomes[2].audit and outcomes[2].audit[0].action == "conversation.human_takeover"


async def test_resolve_batch_decides_as_resolve(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    """Expired takeover, a reaction-like empty text, a channel without agent: as resolve."""
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    bare = in_workspace(await create_channel(gateway, tenant, "sandbox", {}, name="x"), tenant)
    seed = inbound(ch, "x-1", "oi", n=1)
    single = await run_batch(pool, [seed])
    await rows(
        pool,
        "UPDATE conversations SET mode = 'human', human_until = now() - interval '1 minute'"
        " WHERE id = %s RETURNING id",
        single[0].conversation_id,
    )
    batch = [inbound(ch, "x-1", "voltei", n=2), inbound(ch, "x-1", "   ", n=3)]
    batch.append(inbound(bare, "x-1", "oi", n=4))
    outcomes = await run_batch(pool, batch)
    assert [o.reason for o in outcomes] == ["answer", "nothing_to_answer", "no_agent"]
    mode = await rows(
        pool, "SELECT mode FROM conversations WHERE id = %s", single[0].conversation_id
    )
    assert mode[0]["mode"] == "bot"

    # The same messages one by one (a replay) reach the same decisions.
    for msg, expected in zip(batch, outcomes, strict=True):
        async with pool.connection() as conn, conn.transaction():
            one = await resolve(conn, msg, takeover_seconds=600, now=datetime.now(UTC))
        assert (one.reason, one.message_id) == (expected.reason, expected.message_id)


def reply_to(outcome: Any, text: str) -> GeneratedReply:
    r = outcome.resolved
    return GeneratedReply(**r.model_dump(), run_id=uuid.uuid4(), reply_text=text, sources=[])


async def test_prepare_replies_once_per_inbound_message(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    resolved = await run_batch(pool, [inbound(ch, "r-1", "a", n=1), inbound(ch, "r-1", "b", n=2)])
    gens = [reply_to(resolved[0], "A"), reply_to(resolved[1], "B"), reply_to(resolved[0], "A")]
    async with pool.connection() as conn:
        reqs = await prepare_replies(conn, gens)
    assert [r.text for r in reqs if r] == ["A", "B", "A"]
    assert reqs[0].outbound_id == reqs[2].outbound_id != reqs[1].outbound_id
    await rows(
        pool, "UPDATE messages SET status = 'sent' WHERE id = %s RETURNING id", reqs[0].outbound_id
    )
    async with pool.connection() as conn:
        again = await prepare_replies(conn, gens[:2])
    assert again[0] is None and again[1] is not None
    assert again[1].outbound_id == reqs[1].outbound_id
    stored = await rows(
        pool,
        "SELECT text FROM messages WHERE channel_id = %s AND author = 'bot'"
        " ORDER BY created_at, id",
        ch["id"],
    )
    assert [r["text"] for r in stored] == ["A", "B"]


async def test_deliver_batch_sends_each_conversation_in_order_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    msgs = [inbound(ch, f"s-{i % 3}", f"q{i}", n=i) for i in range(12)]
    resolved = await run_batch(pool, msgs)
    async with pool.connection() as conn:
        reqs = await prepare_replies(conn, [reply_to(o, f"r{i}") for i, o in enumerate(resolved)])
    calls: list[tuple[str, str]] = []
    real = SandboxProvider.send_text

    async def slow_send(self: SandboxProvider, session: Any, config: Any, **kw: Any) -> Any:
        await asyncio.sleep(random.random() / 50)  # conversations interleave
        calls.append((kw["to"], kw["text"]))
        return await real(self, session, config, **kw)

    monkeypatch.setattr(SandboxProvider, "send_text", slow_send)
    batch = [r for r in reqs if r is not None]
    batch.append(batch[0])  # a replay within the batch
    async with aiohttp.ClientSession() as http:
        kw: dict[str, Any] = dict(
            box=SecretBox(SecretBox.generate_key()),
            policy=SendPolicy(max_attempts=3, timeout=5),
            now=lambda: T0,
        )
        outcomes = await deliver_batch(pool, http, batch, **kw)
        replay = await deliver_batch(pool, http, batch[:3], **kw)

    assert [o.sent.status for o in outcomes[:-1]] == ["stored"] * 12
    assert outcomes[-1].sent is None and all(o.sent is None for o in replay)
    assert len(calls) == 12
    for c in range(3):
        texts = [t for to, t in calls if to == f"s-{c}"]
        assert texts == [f"r{i}" for i in range(12) if i % 3 == c]
    sent = await rows(
        pool,
        "SELECT status, provider_message_id, sent_at FROM messages"
        " WHERE channel_id = %s AND author = 'bot'",
        ch["id"],
    )
    assert len(sent) == 12
    assert all(r["status"] == "sent" and r["provider_message_id"] for r in sent)
    assert all(r["sent_at"] == T0 for r in sent)
    convs = await rows(
        pool,
        "SELECT last_message_at FROM conversations WHERE channel_id = %s ORDER BY 1",
        ch["id"],
    )
    # Replies sent "at T0" never move a conversation's time back.
    assert [r["last_message_at"] for r in convs] == [T0 + timedelta(seconds=n) for n in (9, 10, 11)]


async def test_deliver_batch_one_broken_message_fails_alone(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    resolved = await run_batch(pool, [inbound(ch, f"k-{i}", f"q{i}", n=i) for i in range(3)])
    async with pool.connection() as conn:
        reqs = await prepare_replies(conn, [reply_to(o, f"r{i}") for i, o in enumerate(resolved)])
    real = SandboxProvider.send_text

    async def broken_for_r1(self: SandboxProvider, session: Any, config: Any, **kw: Any) -> Any:
        if kw["text"] == "r1":
            raise ValueError("a bug in one message")
        return await real(self, session, config, **kw)

    monkeypatch.setattr(SandboxProvider, "send_text", broken_for_r1)
    async with aiohttp.ClientSession() as http:
        outcomes = await deliver_batch(
            pool,
            http,
            [r for r in reqs if r is not None],
            box=SecretBox(SecretBox.generate_key()),
            policy=SendPolicy(max_attempts=3, timeout=5),
            now=lambda: T0,
        )
    assert [o.sent.status for o in outcomes] == ["stored", "failed", "stored"]
    assert outcomes[1].dead is not None and outcomes[1].dead.error_code == "internal_error"
    stored = await rows(
        pool,
        "SELECT text, status FROM messages WHERE channel_id = %s AND author = 'bot' ORDER BY text",
        ch["id"],
    )
    assert [(r["text"], r["status"]) for r in stored] == [
        ("r0", "sent"),
        ("r1", "failed"),
        ("r2", "sent"),
    ]
