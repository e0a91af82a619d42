"""Plans and quotas in the stream: past a monthly limit, no LLM call and the fallback text."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tests.conftest import ADMIN_TOKEN, Fakes, Gateway, Tenant, wait_until
from tests.integration.helpers import metric_total
from tests.integration.test_pipeline import (
    cloud_channel,
    cloud_text,
    make_agent,
    out_messages,
    post_cloud,
)

FALLBACK = "Nosso atendimento automático está indisponível; um atendente responderá em breve."


async def set_limits(gw: Gateway, tenant: Tenant, **limits: int | None) -> dict:
    status, body = await gw.call(
        "PUT", f"/api/v1/tenants/workspaces/{tenant.id}/quotas", key=ADMIN_TOKEN, json=limits
    )
    assert status == 200, body
    status, ws = await gw.call(
        "PATCH",
        f"/api/v1/tenants/workspaces/{tenant.id}",
        key=ADMIN_TOKEN,
        json={"fallback_text": FALLBACK},
    )
    assert status == 200, ws
    return body


async def runs_of(pool: AsyncConnectionPool, workspace_id: str) -> list[dict]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT outcome, prompt_tokens + completion_tokens AS tokens, reply_text, created_at"
            " FROM agent_runs WHERE workspace_id = %s ORDER BY created_at, id",
            (workspace_id,),
        )
        return await cur.fetchall()


async def test_quota_api_shows_plan_and_overrides(gateway: Gateway, tenant: Tenant) -> None:
    status, body = await gateway.call(
        "GET", f"/api/v1/tenants/workspaces/{tenant.id}/quotas", key=ADMIN_TOKEN
    )
    assert status == 200
    assert body["plan"] == "free" and body["inbound_messages"] == 1000
    assert body["overrides"] == {}
    body = await set_limits(gateway, tenant, llm_tokens=None)
    assert body["llm_tokens"] is None and body["inbound_messages"] == 1000
    assert body["overrides"] == {"llm_tokens": None}
    status, body = await gateway.call(
        "DELETE", f"/api/v1/tenants/workspaces/{tenant.id}/quotas", key=ADMIN_TOKEN
    )
    assert status == 200 and body["llm_tokens"] == 200000 and body["overrides"] == {}
    status, body = await gateway.call(
        "PUT",
        f"/api/v1/tenants/workspaces/{tenant.id}/quotas",
        key=ADMIN_TOKEN,
        json={"llm_tokens": -1},
    )
    assert status == 422 and body["error"]["code"] == "validation_error"
    status, body = await gateway.call(
        "GET", f"/api/v1/tenants/workspaces/{tenant.id}/quotas", headers=tenant.headers()
    )
    assert status in (401, 403)  # a workspace key does not manage its own plan


async def test_token_quota_crossed_mid_stream_stops_llm_calls_at_the_limit(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    limit = 400
    await set_limits(gateway, tenant, llm_tokens=limit)
    marker = uuid.uuid4().hex
    agent_id = await make_agent(pool, tenant.id, system_prompt=f"Atendente {marker}.")
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    phone_id = ch["config"]["phone_number_id"]
    refusals_before = await metric_total(worker.web_url, "omnichat_quota_refusals_total")
    senders = [f"5521{uuid.uuid4().int % 10**9:09d}" for _ in range(4)]
    per_sender = 4

    async def talk(sender: str) -> None:
        for i in range(per_sender):
            await post_cloud(gateway, ch["id"], cloud_text(phone_id, sender, f"Pergunta {i}?"))
            await asyncio.sleep(0.05)

    await asyncio.gather(*(talk(s) for s in senders))
    total = len(senders) * per_sender

    async def all_answered() -> bool:
        return len(await out_messages(pool, ch["id"])) == total

    await wait_until(all_answered, timeout=120)
    runs = await runs_of(pool, tenant.id)
    assert len(runs) == total
    ok = [r for r in runs if r["outcome"] == "ok"]
    refused = [r for r in runs if r["outcome"] == "quota_exceeded"]
    assert len(ok) + len(refused) == total and ok and refused
    llm_calls = [r for r in fakes.llm.chat_requests if marker in r.json["messages"][0]["content"]]
    assert len(llm_calls) == len(ok)  # a refused message made no call
    spent = sum(r["tokens"] for r in ok)
    assert spent >= limit  # the limit was reached ...
    assert spent - ok[-1]["tokens"] < limit  # ... and no call started after it was
    assert all(r["reply_text"] == FALLBACK for r in refused)
    texts = [m["text"] for m in await out_messages(pool, ch["id"])]
    assert texts.count(FALLBACK) == len(refused)

    async def audits() -> list:  # written by the audit agent, after the replies
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT details FROM audit_log WHERE workspace_id = %s"
                " AND action = 'quota.exceeded'",
                (tenant.id,),
            )
            return await cur.fetchall()

    await wait_until(audits, timeout=30)
    await asyncio.sleep(1.0)  # room for a second row to show up
    rows = await audits()
    assert len(rows) == 1 and rows[0]["details"]["metric"] == "llm_tokens"
    refusals = await metric_total(worker.web_url, "omnichat_quota_refusals_total")
    assert refusals - refusals_before == len(refused)


async def test_inbound_quota_answers_past_the_limit_with_the_fallback(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    await set_limits(gateway, tenant, inbound_messages=2)
    marker = uuid.uuid4().hex
    agent_id = await make_agent(pool, tenant.id, system_prompt=f"Atendente {marker}.")
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5531{uuid.uuid4().int % 10**9:09d}"
    for i in range(4):
        await post_cloud(
            gateway, ch["id"], cloud_text(ch["config"]["phone_number_id"], sender, f"Oi {i}")
        )

    async def answered() -> bool:
        return len(await out_messages(pool, ch["id"])) == 4

    await wait_until(answered, timeout=60)
    outcomes = [r["outcome"] for r in await runs_of(pool, tenant.id)]
    assert outcomes == ["ok", "ok", "quota_exceeded", "quota_exceeded"]
    texts = [m["text"] for m in await out_messages(pool, ch["id"])]
    assert texts[2:] == [FALLBACK, FALLBACK]
    calls = [r for r in fakes.llm.chat_requests if marker in r.json["messages"][0]["content"]]
    assert len(calls) == 2
