"""run_agents against PostgreSQL: per batch, the runs, replies and quota decisions of run_agent.

The batches mix conversations and workspaces, carry a message twice, are retried, and
call a local OpenAI-compatible server; each conversation keeps its order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from agents_pipeline.llm import LLMClient
from agents_pipeline.quota import INBOUND_SEEN, QuotaGate, counter_key, month_of
from agents_pipeline.run_agent import Unreported, run_agent
from agents_pipeline.run_agent_batch import run_agents
from storage import bulk, messages, quotas
from streams.contracts import RetrievedMessage
from tests.conftest import Fakes, Gateway, Tenant, make_tenant
from tests.fakes.counters import DictCounters
from tests.integration.test_stage_batches import (
    in_workspace,
    inbound,
    rows,
    run_batch,
    sandbox_channel,
)


async def retrieved(pool: AsyncConnectionPool, msgs: list[Any]) -> list[RetrievedMessage]:
    """The messages stored by resolve_batch, as generate receives them (no chunks)."""
    return [RetrievedMessage(**o.resolved.model_dump()) for o in await run_batch(pool, msgs)]


async def test_run_agents_mixes_conversations_and_workspaces(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    other = await make_tenant(gateway, "Outra")
    ch_a = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    ch_b = in_workspace(await sandbox_channel(gateway, other, pool), other)
    first = await retrieved(pool, [inbound(ch_a, "p-1", "primeira", n=0)])
    await run_agents(pool, first, llm=None, default_model="gpt-4o-mini")
    batch = [
        inbound(ch_a, "p-1", "a1", n=1),
        inbound(ch_b, "p-1", "b1", n=2),
        inbound(ch_a, "p-2", "c1", n=3),
        inbound(ch_a, "p-1", "a2", n=4),
        inbound(ch_b, "p-1", "b2", n=5),
    ]
    msgs = await retrieved(pool, batch)
    async with pool.connection() as conn:
        one_by_one = [
            await messages.history(
                conn,
                workspace_id=m.workspace_id,
                conversation_id=m.conversation_id,
                before_message=m.message_id,
            )
            for m in msgs
        ]
        together = await bulk.histories(
            conn, [(m.workspace_id, m.conversation_id, m.message_id) for m in msgs]
        )
    assert together == one_by_one
    assert [[h["text"] for h in hs] for hs in together][:4] == [
        ["primeira"],  # and the reply to it, written by the reply stage, is not there yet
        [],
        [],
        ["primeira", "a1"],
    ]

    done = await run_agents(pool, msgs, llm=None, default_model="gpt-4o-mini")

    assert [d.reply.message_id for d in done] == [m.message_id for m in msgs]
    assert all(d.created and d.result and d.result.outcome == "offline" for d in done)
    stored = await rows(
        pool,
        "SELECT r.id, r.workspace_id, r.message_id, r.trace_id, r.reply_text, m.text"
        " FROM agent_runs r JOIN messages m ON m.id = r.message_id"
        " WHERE r.message_id = ANY(%s) ORDER BY r.created_at, r.id",
        [m.message_id for m in msgs],
    )
    assert [r["text"] for r in stored] == ["a1", "b1", "c1", "a2", "b2"]  # the batch's order
    for r, m, d in zip(stored, msgs, done, strict=True):
        assert (r["workspace_id"], r["trace_id"]) == (m.workspace_id, m.trace_id)
        assert (d.reply.run_id, d.reply.reply_text) == (r["id"], r["reply_text"])
        assert d.reply.trace_id == m.trace_id


async def test_run_agents_retried_batch_writes_nothing_twice(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    msgs = await retrieved(pool, [inbound(ch, f"r-{i % 2}", f"q{i}", n=i) for i in range(4)])
    counters = DictCounters()
    gate = QuotaGate(counters)
    kw: dict[str, Any] = dict(llm=None, default_model="gpt-4o-mini", gate=gate)
    # A copy of the first message inside the batch (a replayed record).
    done = await run_agents(pool, [*msgs, msgs[0]], **kw)
    again = await run_agents(pool, msgs, **kw)
    single = await run_agent(pool, msgs[2], **kw)

    assert [d.created for d in done] == [True] * 4 + [False]
    assert done[4].result is None and done[4].reply.run_id == done[0].reply.run_id
    assert not any(d.created for d in again) and not single.created
    assert [d.reply.run_id for d in again] == [d.reply.run_id for d in done[:4]]
    assert [d.reply.reply_text for d in again] == [d.reply.reply_text for d in done[:4]]
    assert single.reply.run_id == done[2].reply.run_id
    count = await rows(
        pool, "SELECT count(*) AS n FROM agent_runs WHERE workspace_id = %s", tenant.id
    )
    assert count[0]["n"] == 4
    month = month_of(datetime.now(UTC))
    assert counters.get(counter_key(uuid.UUID(tenant.id), month, INBOUND_SEEN)) == 4


async def test_run_agents_decides_the_inbound_quota_in_order(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    ws = uuid.UUID(tenant.id)
    async with pool.connection() as conn:
        await quotas.set_override(conn, workspace_id=ws, metric="inbound_messages", monthly_limit=3)
        await conn.commit()
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    msgs = await retrieved(pool, [inbound(ch, f"o-{i % 2}", f"q{i}", n=i) for i in range(5)])
    gate = QuotaGate(DictCounters())

    done = await run_agents(pool, msgs, llm=None, default_model="gpt-4o-mini", gate=gate)

    outcomes = [d.result.outcome for d in done if d.result]
    assert outcomes == ["offline"] * 3 + ["quota_exceeded"] * 2
    assert [d.refusal.refused if d.refusal else None for d in done] == [None] * 3 + [
        "inbound_messages"
    ] * 2


async def test_run_agents_calls_the_llm_once_per_message_in_conversation_order(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, fakes: Fakes
) -> None:
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    marker = uuid.uuid4().hex[:8]
    batch = [inbound(ch, f"l-{i % 3}", f"{marker} q{i}", n=i) for i in range(9)]
    batch.append(inbound(ch, "l-0", "figurinha", n=9))
    msgs = await retrieved(pool, batch)
    msgs[9] = msgs[9].model_copy(update={"text": None})  # nothing to answer: no call
    gate = QuotaGate(DictCounters())

    def calls() -> list[str]:
        return [
            r.json["messages"][-1]["content"]
            for r in fakes.llm.chat_requests
            if marker in r.json["messages"][-1]["content"]
        ]

    async with LLMClient(base_url=fakes.llm.base_url, api_key="sk-test") as llm:
        kw: dict[str, Any] = dict(llm=llm, default_model="gpt-4o-mini", gate=gate)
        done = await run_agents(pool, msgs, **kw)
        again = await run_agents(pool, msgs, **kw)

    assert [d.result.outcome for d in done if d.result] == ["ok"] * 9 + ["fallback"]
    assert not any(d.created for d in again)
    made = calls()
    assert sorted(made) == sorted(m.text for m in msgs[:9])  # once each, none on the retry
    for c in range(3):
        mine = [t for t in made if t in {m.text for m in msgs[c:9:3]}]
        assert mine == [m.text for m in msgs[c:9:3]]
    assert all(d.reply.reply_text for d in done)


async def test_run_agents_retry_after_a_failure_reports_the_llm_runs_once(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LLM runs are recorded as their calls return; the batch then fails before it reports
    them. Its retry makes no call again and reports each of them, once, as created."""
    ch = in_workspace(await sandbox_channel(gateway, tenant, pool), tenant)
    marker = uuid.uuid4().hex[:8]
    msgs = await retrieved(pool, [inbound(ch, f"f-{i}", f"{marker} q{i}", n=i) for i in range(3)])
    msgs[2] = msgs[2].model_copy(update={"text": None})  # no call: written with the batch
    real = bulk.insert_runs
    failures = [psycopg.OperationalError("the database went away")]

    async def fails_once(conn: Any, rows: list[dict]) -> Any:
        if failures:
            raise failures.pop()
        return await real(conn, rows)

    monkeypatch.setattr(bulk, "insert_runs", fails_once)
    unreported = Unreported()
    async with LLMClient(base_url=fakes.llm.base_url, api_key="sk-test") as llm:
        kw: dict[str, Any] = dict(llm=llm, default_model="gpt-4o-mini", unreported=unreported)
        with pytest.raises(psycopg.OperationalError):
            await run_agents(pool, msgs, **kw)
        retried = await run_agents(pool, msgs, **kw)
        again = await run_agents(pool, msgs, **kw)

    assert [d.created for d in retried] == [True, True, True]
    assert [d.result.outcome for d in retried if d.result] == ["ok", "ok", "fallback"]
    assert not any(d.created for d in again)
    made = [r for r in fakes.llm.chat_requests if marker in r.json["messages"][-1]["content"]]
    assert len(made) == 2
