"""Where provider calls go, and what a workspace learns of their answers.

- PATCH of a channel's ``base_url`` needs the credentials its calls carry again;
- in the production posture (``OMNICHAT_ALLOW_PRIVATE_PROVIDER_URLS=false``) a channel
  pointed at a local address never reaches it: the message fails with our code, and the
  channel's audit says why. The session worker runs with private URLs allowed (the
  fakes listen on 127.0.0.1), so this test swaps it for a worker of the same group in
  the production posture, and back;
- a redirect is not followed; a provider's error text reaches neither ``messages.sent``
  nor ``deadletter`` nor the message row nor the API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Fakes, Gateway, Stack, Tenant, wait_until
from tests.fakes.evolution_api import DEFAULT_API_KEY as EVO_KEY
from tests.fakes.evolution_api import FakeEvolutionAPI, evolution_error
from tests.fakes.graph_api import FakeGraphAPI, graph_error
from tests.integration.helpers import WorkerProcess, count_rows, create_channel, read_topic
from tests.integration.test_pipeline import make_agent, out_messages
from tests.integration.test_send_isolation import channel_on, sender, talk

EVOLUTION = {
    "base_url": "http://127.0.0.1:9/evo",
    "instance": "loja1",
    "api_key": "evo-api-key-secret",
    "webhook_token": "evo-webhook-token-secret",
}
CLOUD = {
    "phone_number_id": "106540352242922",
    "access_token": "EAAG-super-secret-access-token",
    "app_secret": "app-secret-0123456789",
    "verify_token": "verify-me-please",
}


async def patch(gw: Gateway, tenant: Tenant, ch: dict, body: dict) -> tuple[int, Any]:
    return await gw.call(
        "PATCH", f"/api/v1/channels/{ch['id']}", key=tenant.key, workspace=tenant.id, json=body
    )


async def test_a_new_base_url_needs_the_credentials_again(gateway: Gateway, tenant: Tenant) -> None:
    evo = await create_channel(gateway, tenant, "evolution", EVOLUTION)
    status, body = await patch(
        gateway, tenant, evo, {"config": {"base_url": "https://evil.example"}}
    )
    assert status == 422, body
    assert body["error"]["code"] == "secrets_required"
    assert body["error"]["details"]["fields"] == ["config.api_key"]
    _, got = await gateway.call(
        "GET", f"/api/v1/channels/{evo['id']}", key=tenant.key, workspace=tenant.id
    )
    assert got["config"]["base_url"] == evo["config"]["base_url"]  # nothing changed

    # The same URL spelled again is no change; other fields need no credentials.
    same = {"base_url": "HTTP://127.0.0.1:9/evo", "instance": "loja2"}
    status, body = await patch(gateway, tenant, evo, {"config": same, "name": "Evo 2"})
    assert status == 200, body

    moved = {"base_url": "https://evo.example.com", "api_key": "the-key-for-the-new-host"}
    status, body = await patch(gateway, tenant, evo, {"config": moved})
    assert status == 200, body
    assert body["config"]["base_url"].startswith("https://evo.example.com")

    cloud = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    status, body = await patch(gateway, tenant, cloud, {"config": {"base_url": "http://x.test"}})
    assert status == 422 and body["error"]["code"] == "secrets_required"
    assert body["error"]["details"]["fields"] == ["config.access_token"]
    status, body = await patch(gateway, tenant, cloud, {"config": {"api_version": "v24.0"}})
    assert status == 200, body  # the version is a path segment, not a destination


@pytest_asyncio.fixture(loop_scope="session")
async def production_worker(worker: WorkerProcess, stack: Stack) -> AsyncIterator[WorkerProcess]:
    """The session worker's group, served by a worker in the production posture."""
    worker.stop()  # make room: the same consumer group, so it takes every partition
    strict = WorkerProcess(
        worker.settings,
        stack.tmp / "worker-production-posture.log",
        worker_id=worker.worker_id,
        extra_env={"OMNICHAT_ALLOW_PRIVATE_PROVIDER_URLS": "false"},
    ).start()
    try:
        yield strict
    finally:
        strict.stop()
        worker.start()


async def test_production_posture_never_calls_a_private_base_url(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    fakes: Fakes,
    production_worker: WorkerProcess,
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    instance = f"shop-{uuid.uuid4().hex[:8]}"
    evo = await create_channel(
        gateway,
        tenant,
        "evolution",
        {
            "base_url": fakes.evolution.base_url,  # http://127.0.0.1:<port>
            "instance": instance,
            "api_key": EVO_KEY,
            "webhook_token": "posture-hook",
        },
        agent_id=agent_id,
    )
    port = fakes.graph.base_url.rsplit(":", 1)[1]

    class ByName:  # the Graph fake, named by a host name that resolves to loopback
        base_url = f"http://localhost:{port}"

    cloud = await channel_on(gateway, tenant, ByName, agent_id, "by-name")
    number = sender()
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/webhooks/evolution/{evo['id']}",
        json={
            "event": "MESSAGES_UPSERT",
            "instance": instance,
            "data": {
                "key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": False, "id": "P1"},
                "pushName": "Ana",
                "message": {"conversation": "Oi"},
                "messageTimestamp": int(time.time()),
            },
        },
        headers={"Authorization": "Bearer posture-hook"},
    )
    assert status == 200
    await talk(gateway, cloud, [sender()])

    async def both_failed() -> list[dict]:
        rows = [r for ch in (evo, cloud) for r in await out_messages(pool, ch["id"])]
        return rows if len(rows) == 2 and all(r["status"] == "failed" for r in rows) else []

    rows = await wait_until(both_failed, timeout=120, interval=0.25)
    assert {r["error_code"] for r in rows} == {"destination_not_allowed"}
    assert all("127.0.0.1" not in (r["error_message"] or "") for r in rows)
    phone_id = cloud["config"]["phone_number_id"]
    assert [r for r in fakes.evolution.requests if instance in r.path] == []
    assert [r for r in fakes.graph.requests if phone_id in r.path] == []

    async def audited() -> list[dict]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT object_id, details FROM audit_log WHERE workspace_id = %s"
                " AND action = 'channel.destination_not_allowed'",
                (tenant.id,),
            )
            found = await cur.fetchall()
        return found if len(found) == 2 else []

    audits = await wait_until(audited, timeout=30)
    assert {str(a["object_id"]) for a in audits} == {evo["id"], cloud["id"]}
    assert {a["details"]["host"] for a in audits} == {"127.0.0.1", "localhost"}


async def test_provider_words_and_redirects_never_reach_the_workspace(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    marker = f"LEAK{uuid.uuid4().hex[:10]}"
    agent_id = await make_agent(pool, tenant.id)
    async with (
        FakeGraphAPI() as refusing,
        FakeGraphAPI() as redirecting,
        FakeEvolutionAPI() as echoing,
    ):
        refusing.always(
            400,
            graph_error(131009, f"{marker} (#131009) internal http://10.0.0.7/admin said no",
                        details=f"{marker} db=internal-db.corp:5432"),
        )  # fmt: skip
        redirecting.always(302, headers={"Location": f"{redirecting.base_url}/elsewhere"})
        echoing.always(500, evolution_error(500, f"{marker} connect ECONNREFUSED 10.0.0.5:5432"))
        cloud = await channel_on(gateway, tenant, refusing, agent_id, "refuses")
        moved = await channel_on(gateway, tenant, redirecting, agent_id, "redirects")
        instance = f"echo-{uuid.uuid4().hex[:6]}"
        evo = await create_channel(
            gateway,
            tenant,
            "evolution",
            {
                "base_url": echoing.base_url,
                "instance": instance,
                "api_key": EVO_KEY,
                "webhook_token": "echo-hook",
            },
            agent_id=agent_id,
        )
        await talk(gateway, cloud, [sender()])
        await talk(gateway, moved, [sender()])

        async def failed(ch: dict) -> dict | None:
            rows = await out_messages(pool, ch["id"])
            return rows[0] if rows and rows[0]["status"] == "failed" else None

        refused = await wait_until(lambda: failed(cloud), timeout=60, interval=0.25)
        assert refused["error_code"] == "provider_rejected"
        assert "131009" in refused["error_message"]
        redirected = await wait_until(lambda: failed(moved), timeout=60, interval=0.25)
        assert redirected["error_code"] == "redirect_not_followed"
        assert [r.path for r in redirecting.requests if "elsewhere" in r.path] == []
        assert len(redirecting.requests) == 1

        # Evolution's 500 is retriable: it fails once the attempts are spent (deferred
        # between them); make those come due at once.
        number = sender()
        status, _ = await gateway.call(
            "POST",
            f"/api/v1/webhooks/evolution/{evo['id']}",
            json={
                "event": "MESSAGES_UPSERT",
                "instance": instance,
                "data": {
                    "key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": False, "id": "E1"},
                    "message": {"conversation": "Oi"},
                    "messageTimestamp": int(time.time()),
                },
            },
            headers={"Authorization": "Bearer echo-hook"},
        )
        assert status == 200

        async def evo_failed() -> dict | None:
            async with pool.connection() as conn:
                await conn.execute(
                    "UPDATE send_deferrals SET not_before = now() WHERE channel_id = %s",
                    (evo["id"],),
                )
            return await failed(evo)

        echoed = await wait_until(evo_failed, timeout=120, interval=0.5)
        assert echoed["error_code"] in ("provider_unavailable", "timeout")
        assert len(echoing.requests) == 5  # OMNICHAT_SEND_MAX_ATTEMPTS

    ids = {str(r["id"]) for r in (refused, redirected, echoed)}
    broker = gateway.settings.broker_url or ""

    async def records(topic: str) -> list[str]:
        found = [r.value.decode() for r in await read_topic(broker, topic)]
        found = [v for v in found if any(i in v for i in ids)]
        return found if len(found) >= 3 else []

    for topic in ("messages.sent", "deadletter"):
        values = await wait_until(lambda t=topic: records(t), timeout=30)
        assert all(marker not in v and "10.0.0." not in v for v in values), values
        assert all(json.loads(v)["error_code"] for v in values)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT error_code, error_message FROM messages WHERE id = ANY(%s::uuid[])",
            (list(ids),),
        )
        stored = await cur.fetchall()
    assert len(stored) == 3 and all(marker not in str(r) for r in stored)
    for ch in (cloud, moved, evo):
        _, conversations = await gateway.call(
            "GET", f"/api/v1/conversations/?channel_id={ch['id']}", key=tenant.key,
            workspace=tenant.id,
        )  # fmt: skip
        for conv in conversations["items"]:
            _, msgs = await gateway.call(
                "GET", f"/api/v1/conversations/{conv['id']}/messages", key=tenant.key,
                workspace=tenant.id,
            )  # fmt: skip
            assert marker not in json.dumps(msgs)
    assert await count_rows(pool, "SELECT count(*) FROM send_deferrals WHERE channel_id = %s",
                            evo["id"]) == 0  # fmt: skip
