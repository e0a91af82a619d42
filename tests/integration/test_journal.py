"""The gateway's journal (gateway/journal.py) against the real broker, PostgreSQL and a worker.

Group commits; records deleted once a wave saw the pipeline carry them; a stopped gateway's
records taken over and redriven (a live one's left alone); a broker that lost its log given
the journal again; and, with intake closed (a draining gateway), 503 for producing routes.
The crash of a whole `omnichat dev` is test_durable_restart.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from gateway.services import SERVICES
from omnichat.embedded import EmbeddedBroker
from omnichat.settings import Settings
from storage import journal
from streams.contracts import RawHeaders
from streams.progress import Progress
from streams.topics import WEBHOOKS_RAW, ensure_topics
from tests.conftest import Fakes, Gateway, Stack, Tenant, start_gateway, wait_until
from tests.integration.helpers import WorkerProcess, read_topic, sign
from tests.integration.test_pipeline import (
    APP_SECRET,
    cloud_channel,
    cloud_text,
    make_agent,
    out_messages,
    sends_to,
)


@asynccontextmanager
async def journal_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway with the journal on (its own app, started and stopped here)."""
    runner, url, app = await start_gateway(settings.model_copy(update={"journal": "on"}))
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(url, http, app, settings)
    finally:
        await runner.cleanup()


async def post(gw: Gateway, channel_id: str, body: bytes) -> tuple[int, Any]:
    return await gw.call(
        "POST",
        f"/api/v1/webhooks/whatsapp/{channel_id}",
        data=body,
        headers={"X-Hub-Signature-256": sign(body, APP_SECRET)},
    )


async def lane_rows(pool: AsyncConnectionPool, lane: uuid.UUID) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM journal WHERE lane = %s", (lane,))
        return int((await cur.fetchone())["n"])


def metric(gw: Gateway, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the gateway's own registry."""
    value = gw.app[SERVICES].metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


async def answered_once(
    pool: AsyncConnectionPool, fakes: Fakes, channel_id: str, texts: dict[str, str]
) -> None:
    """Every text (by sender) answered, once."""

    async def done() -> bool:
        rows = await out_messages(pool, channel_id)
        return len(rows) >= len(texts) and all(r["status"] == "sent" for r in rows)

    await wait_until(done, timeout=120, interval=0.5)
    await asyncio.sleep(1.5)  # room for a second reply to show up
    assert len(await out_messages(pool, channel_id)) == len(texts)
    for sender, text in texts.items():
        got = [r.json["text"]["body"] for r in sends_to(fakes.graph, sender)]
        assert got == [f"Resposta simulada para: {text}"], (sender, got)


async def test_webhooks_are_group_committed_and_forgotten_once_the_pipeline_carried_them(
    settings: Settings,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    worker: WorkerProcess,
    fakes: Fakes,
) -> None:
    async with journal_gateway(settings.model_copy(update={"worker_id": worker.worker_id})) as gw:
        agent_id = await make_agent(pool, tenant.id)
        ch = await cloud_channel(gw, tenant, fakes, agent_id)
        phone = ch["config"]["phone_number_id"]
        texts = {f"5531{uuid.uuid4().int % 10**9:09d}": f"pedido {i}" for i in range(48)}
        answers = await asyncio.gather(
            *(post(gw, ch["id"], cloud_text(phone, s, t)) for s, t in texts.items())
        )
        assert all(status == 200 and a["idempotent"] is False for status, a in answers)
        lane = gw.app[SERVICES].outbox.lane  # type: ignore[union-attr]
        commits = metric(gw, "omnichat_journal_commit_records_count")
        records = metric(gw, "omnichat_journal_commit_records_sum")
        # Concurrent requests shared commits: fewer commits than records.
        assert records == 48 and 1 <= commits < 48, (commits, records)

        await answered_once(pool, fakes, ch["id"], texts)

        async def forgotten() -> bool:
            return await lane_rows(pool, lane) == 0

        await wait_until(forgotten, timeout=60, interval=0.5)
        assert metric(gw, "omnichat_journal_pruned_total") >= 48
        assert metric(gw, "omnichat_journal_replayed_total", {"reason": "redrive"}) == 0


async def test_a_stopped_gateways_records_are_taken_over_and_a_live_ones_are_not(
    settings: Settings,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    worker: WorkerProcess,
    fakes: Fakes,
    gateway: Gateway,
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    phone = ch["config"]["phone_number_id"]
    dead, alive = uuid.uuid4(), uuid.uuid4()
    texts = {f"5541{uuid.uuid4().int % 10**9:09d}": f"sem resposta {i}" for i in range(3)}

    def record(sender: str, text: str) -> journal.Record:
        trace = uuid.uuid4().hex
        return journal.Record(
            WEBHOOKS_RAW,
            ch["id"].encode(),
            cloud_text(phone, sender, text),
            tuple(
                RawHeaders.encode(
                    provider="whatsapp_cloud",
                    channel_id=ch["id"],
                    workspace_id=tenant.id,
                    received_at=datetime.now(UTC),
                    trace_id=trace,
                    idempotency_key=f"k-{trace}",
                )
            ),
        )

    assert settings.database_url
    holder = await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True, row_factory=dict_row
    )
    try:
        assert await journal.try_hold(holder, alive)  # a gateway that runs holds its lane
        async with pool.connection() as conn:
            await journal.append(
                conn,
                lane=dead,
                seqs=[1, 2, 3],
                records=[record(s, t) for s, t in texts.items()],
            )
            await journal.append(
                conn, lane=alive, seqs=[1], records=[record("5549000000000", "vivo")]
            )
        async with journal_gateway(
            settings.model_copy(update={"worker_id": worker.worker_id})
        ) as gw:
            # Taken over before the gateway listened (ready), and produced with redrive.
            status, ready = await gw.call("GET", "/readyz")
            assert status == 200 and ready["journal"] == "ok", ready
            assert metric(gw, "omnichat_journal_replayed_total", {"reason": "redrive"}) == 3
            await answered_once(pool, fakes, ch["id"], texts)

            async def gone() -> bool:
                return await lane_rows(pool, dead) == 0

            await wait_until(gone, timeout=60, interval=0.5)
            assert await lane_rows(pool, alive) == 1  # a live gateway's records are its own
        assert settings.broker_url
        raw = await read_topic(settings.broker_url, WEBHOOKS_RAW)
        ours = [r for r in raw if r.key == ch["id"].encode()]
        assert len(ours) == 3 and all("redrive" in dict(r.headers) for r in ours)
    finally:
        async with pool.connection() as conn:
            await journal.delete(conn, lane=alive, seqs=[1])
        await holder.close()


async def test_a_broker_that_lost_its_log_is_given_the_journal_again(
    settings: Settings,
    stack: Stack,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    fakes: Fakes,
) -> None:
    broker = EmbeddedBroker(log_path=stack.tmp / "broker-epoch.log").start()
    group = f"omnichat-epoch-{uuid.uuid4().hex[:6]}"
    local = settings.model_copy(update={"broker_url": broker.url, "worker_id": group})
    worker = WorkerProcess(
        local.model_copy(
            update={"llm_base_url": fakes.llm.base_url, "llm_api_key": SecretStr("sk-test")}
        ),
        stack.tmp / "worker-epoch.log",
        worker_id=group,
    )
    try:
        await ensure_topics(broker.url, local.topic_partitions)
        async with journal_gateway(local) as gw:
            agent_id = await make_agent(pool, tenant.id)
            ch = await cloud_channel(gw, tenant, fakes, agent_id)
            phone = ch["config"]["phone_number_id"]
            texts = {f"5551{uuid.uuid4().int % 10**9:09d}": f"de novo {i}" for i in range(5)}
            for sender, text in texts.items():  # no worker yet: they wait on the broker
                status, _ = await post(gw, ch["id"], cloud_text(phone, sender, text))
                assert status == 200
            lane = gw.app[SERVICES].outbox.lane  # type: ignore[union-attr]
            assert await lane_rows(pool, lane) == 5

            broker.stop()  # the broker and its log are gone; a new one on the same port
            broker = EmbeddedBroker(port=broker.port, log_path=broker.log_path).start()

            async def redriven() -> bool:
                return metric(gw, "omnichat_journal_replayed_total", {"reason": "redrive"}) >= 5

            await wait_until(redriven, timeout=60, interval=0.5)
            worker.start()
            await answered_once(pool, fakes, ch["id"], texts)

            async def forgotten() -> bool:
                return await lane_rows(pool, lane) == 0

            await wait_until(forgotten, timeout=60, interval=0.5)
            progress = Progress(broker.url, group)
            try:
                assert await progress.lag() == 0
            finally:
                await progress.stop()
    finally:
        worker.stop()
        broker.stop()


async def test_a_draining_gateway_refuses_work_it_would_produce_and_serves_the_rest(
    gateway: Gateway, tenant: Tenant
) -> None:
    svc = gateway.app[SERVICES]
    svc.intake.open = False
    try:
        status, body = await gateway.call(
            "POST",
            "/api/v1/webhooks/inbox/",
            key=tenant.key,
            workspace=tenant.id,
            json={"channel_id": str(uuid.uuid4()), "payload": {}},
        )
        assert status == 503 and body["error"]["code"] == "draining"
        for method, path, json in (
            ("POST", f"/api/v1/conversations/{uuid.uuid4()}/messages", {"text": "oi"}),
            ("PATCH", f"/api/v1/conversations/{uuid.uuid4()}", {"status": "closed"}),
            ("POST", f"/api/v1/webhooks/whatsapp/{uuid.uuid4()}", {}),
        ):
            status, _ = await gateway.call(
                method, path, key=tenant.key, workspace=tenant.id, json=json
            )
            assert status == 503, (method, path)
        async with gateway.http.post(gateway.url + f"/api/v1/webhooks/sandbox/{uuid.uuid4()}") as r:
            assert r.status == 503 and r.headers["Retry-After"] == str(
                gateway.settings.retry_after_seconds
            )
        status, _ = await gateway.call(
            "GET", "/api/v1/conversations/", key=tenant.key, workspace=tenant.id
        )
        assert status == 200  # reads go on
        status, ready = await gateway.call("GET", "/readyz")
        assert status == 503 and ready["intake"] == "stopped"
    finally:
        svc.intake.open = True
    status, _ = await gateway.call(
        "POST",
        "/api/v1/webhooks/inbox/",
        key=tenant.key,
        workspace=tenant.id,
        json={"channel_id": str(uuid.uuid4()), "payload": {}},
    )
    assert status == 404  # open again: the unknown channel is what answers
