"""Admin views over the worker's tables, and the worker's metrics moving with the traffic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Fakes, Gateway, Tenant, make_tenant, wait_until
from tests.integration.helpers import metric_total
from tests.integration.test_pipeline import (
    cloud_channel,
    cloud_text,
    make_agent,
    out_messages,
    post_cloud,
)


async def view(worker: Any, path: str, headers: dict[str, str], method: str = "GET") -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, worker.web_url + "/api/v1/stats" + path, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_views_agree_with_the_database_and_metrics_move(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    names = (
        "omnichat_stage_events_in_total",
        "omnichat_llm_calls_total",
        "omnichat_provider_sends_total",
        "omnichat_reply_latency_seconds_count",
    )
    before = {n: await metric_total(worker.web_url, n) for n in names}
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    phone_id = ch["config"]["phone_number_id"]
    for sender, text in (("a", "Oi"), ("a", "Tem café?"), ("b", "Horário?")):
        number = f"5541{uuid.uuid5(uuid.NAMESPACE_DNS, ch['id'] + sender).int % 10**9:09d}"
        await post_cloud(gateway, ch["id"], cloud_text(phone_id, number, text))

    async def answered() -> bool:
        rows = await out_messages(pool, ch["id"])
        return len(rows) == 3 and all(r["status"] == "sent" for r in rows)

    await wait_until(answered, timeout=90)
    headers = tenant.headers()

    async def channels() -> list | None:
        status, body = await view(worker, "/channels", headers)
        assert status == 200, body
        mine = [i for i in body["items"] if i["channel_id"] == ch["id"]]
        return mine if mine and mine[0]["outbound"] == 3 else None

    [row] = await wait_until(channels, timeout=30)
    assert row == {"channel_id": ch["id"], "inbound": 3, "outbound": 3}

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, sum(prompt_tokens) AS p, sum(completion_tokens) AS c"
            " FROM agent_runs WHERE workspace_id = %s",
            (tenant.id,),
        )
        runs = await cur.fetchone()

    async def usage_row() -> dict | None:
        # The usage agent adds to its table first and copies the totals to the row after.
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM usage_records WHERE workspace_id = %s", (tenant.id,)
            )
            row = await cur.fetchone()
        return row if row and row["outbound_messages"] == 3 else None

    record = await wait_until(usage_row, timeout=30)
    status, body = await view(worker, "/agent-runs", headers)
    assert status == 200
    assert body["count"] == runs["n"] == 3 and body["by_outcome"] == {"ok": 3}
    assert body["prompt_tokens"] == runs["p"] and body["completion_tokens"] == runs["c"]
    assert body["mean_latency_ms"] is not None

    today = datetime.now(UTC).date().isoformat()
    status, body = await view(worker, f"/usage?from={today}&to={today}", headers)
    assert status == 200
    assert body["items"] == [
        {
            "period": record["day"].isoformat(),
            "inbound_messages": record["inbound_messages"],
            "outbound_messages": record["outbound_messages"],
            "llm_prompt_tokens": record["llm_prompt_tokens"],
            "llm_completion_tokens": record["llm_completion_tokens"],
        }
    ]
    status, body = await view(worker, "/quota", headers)
    assert status == 200 and body["plan"] == "free"
    used = {i["metric"]: i for i in body["items"]}
    assert used["inbound_messages"] == {
        "metric": "inbound_messages",
        "monthly_limit": 1000,
        "used": 3,
    }
    assert used["llm_tokens"]["used"] == runs["p"] + runs["c"]

    status, body = await view(worker, "/conversations", headers)
    assert status == 200 and body == {"open": 2, "opened": 2, "closed": 0}
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM conversations WHERE channel_id = %s ORDER BY created_at LIMIT 1",
            (ch["id"],),
        )
        first = (await cur.fetchone())["id"]
    status, _ = await gateway.call(
        "PATCH", f"/api/v1/conversations/{first}", headers=headers, json={"status": "closed"}
    )
    assert status == 200

    async def closed() -> dict | None:
        _, body = await view(worker, "/conversations", headers)
        return body if body["closed"] == 1 else None

    assert await wait_until(closed, timeout=30) == {"open": 1, "opened": 2, "closed": 1}

    after = {n: await metric_total(worker.web_url, n) for n in names}
    assert after["omnichat_stage_events_in_total"] >= before["omnichat_stage_events_in_total"] + 15
    assert after["omnichat_llm_calls_total"] >= before["omnichat_llm_calls_total"] + 3
    assert after["omnichat_provider_sends_total"] >= before["omnichat_provider_sends_total"] + 3
    assert (
        after["omnichat_reply_latency_seconds_count"]
        >= before["omnichat_reply_latency_seconds_count"] + 3
    )


async def test_views_need_the_workspace_key(gateway: Gateway, tenant: Tenant, worker: Any) -> None:
    other = await make_tenant(gateway, "Other")
    status, body = await view(worker, "/channels", {})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await view(
        worker,
        "/channels",
        {"Authorization": f"Bearer {other.key}", "X-Workspace-ID": tenant.id},
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await view(worker, "/usage?from=2026-01-02&to=2026-01-01", tenant.headers())
    assert status == 400 and body["error"]["code"] == "invalid_parameter"
    status, body = await view(worker, "/channels", tenant.headers(), method="POST")
    assert status == 405
    status, body = await view(worker, "/channels", tenant.headers())
    assert status == 200 and body == {"items": []}  # a new workspace: nothing yet
