"""A channel or workspace deactivated after a message entered the stream: not answered, audited.

The gateway refuses webhooks of inactive channels and workspaces, so the messages enter
while the worker is stopped and everything is active; then the deactivations happen,
then the worker starts and finds the messages in the stream.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from tests.conftest import ADMIN_TOKEN, Fakes, Gateway, Tenant, make_tenant, wait_until
from tests.integration.helpers import WorkerProcess, count_rows
from tests.integration.test_pipeline import make_agent, out_messages
from tests.integration.test_send_isolation import channel_on, sender, talk


async def audit_rows(pool: AsyncConnectionPool, workspace_id: str, action: str) -> list[dict]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT object_id, details FROM audit_log WHERE workspace_id = %s AND action = %s",
            (workspace_id, action),
        )
        return await cur.fetchall()


async def test_deactivated_channel_or_workspace_is_not_answered_and_audited(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    worker: WorkerProcess,
    fakes: Fakes,
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    other = await make_tenant(gateway, "Other")
    other_agent = await make_agent(pool, other.id)
    closing = await channel_on(gateway, tenant, fakes.graph, agent_id, "closing")
    human = await channel_on(gateway, tenant, fakes.graph, agent_id, "human")
    of_closing_ws = await channel_on(gateway, other, fakes.graph, other_agent, "ws-closing")

    # A conversation on ``human`` exists (answered) before the worker stops.
    customer = sender()
    await talk(gateway, human, [customer])

    async def answered() -> bool:
        rows = await out_messages(pool, human["id"])
        return bool(rows) and rows[0]["status"] == "sent"

    await wait_until(answered, timeout=60)
    status, convs = await gateway.call(
        "GET", f"/api/v1/conversations/?channel_id={human['id']}", key=tenant.key,
        workspace=tenant.id,
    )  # fmt: skip
    conversation = convs["items"][0]["id"]
    llm_calls = len(fakes.llm.chat_requests)

    worker.stop()
    try:
        a, b = sender(), sender()
        await talk(gateway, closing, [a])
        await talk(gateway, of_closing_ws, [b])
        status, reply = await gateway.call(
            "POST", f"/api/v1/conversations/{conversation}/messages", key=tenant.key,
            workspace=tenant.id, json={"text": "Um atendente responde já"},
        )  # fmt: skip
        assert status == 202, reply
        for ch in (closing, human):
            status, _ = await gateway.call(
                "PATCH", f"/api/v1/channels/{ch['id']}", key=tenant.key, workspace=tenant.id,
                json={"is_active": False},
            )  # fmt: skip
            assert status == 200
        status, _ = await gateway.call(
            "PATCH", f"/api/v1/tenants/workspaces/{other.id}", key=ADMIN_TOKEN,
            json={"is_active": False},
        )  # fmt: skip
        assert status == 200
    finally:
        worker.start()

    async def not_answered() -> list[dict]:
        found = await audit_rows(pool, tenant.id, "message.not_answered")
        found += await audit_rows(pool, other.id, "message.not_answered")
        return found if len(found) == 2 else []

    audits = await wait_until(not_answered, timeout=120, interval=0.25)
    assert sorted(a["details"]["reason"] for a in audits) == [
        "channel_inactive",
        "workspace_inactive",
    ]

    async def refused() -> dict | None:
        rows = [r for r in await out_messages(pool, human["id"]) if r["author"] == "human"]
        return rows[0] if rows and rows[0]["status"] == "blocked" else None

    row = await wait_until(refused, timeout=60, interval=0.25)
    assert row["error_code"] == "channel_inactive"
    [send_audit] = await audit_rows(pool, tenant.id, "message.send_refused")
    assert send_audit["object_id"] == str(row["id"])
    assert send_audit["details"] == {"reason": "channel_inactive"}

    # Nothing was generated or sent for them.
    assert await out_messages(pool, closing["id"]) == []
    assert await out_messages(pool, of_closing_ws["id"]) == []
    assert (
        await count_rows(
            pool,
            "SELECT count(*) FROM agent_runs r JOIN messages m ON m.id = r.message_id"
            " WHERE m.channel_id = ANY(%s::uuid[])",
            [closing["id"], of_closing_ws["id"]],
        )
        == 0
    )
    assert len(fakes.llm.chat_requests) == llm_calls
    for s in (a, b):
        assert not [r for r in fakes.graph.requests if r.json and r.json.get("to") == s]
    assert len([r for r in fakes.graph.requests if r.json and r.json.get("to") == customer]) == 1
