"""The embedded broker restarted empty mid-stream: its log is gone, no accepted work is.

Tansu removes no record (no retention, no DeleteRecords), so ``omnichat dev`` restarts it
once it has grown (omnichat/recycle.py). Here the restart happens while webhooks keep
arriving: every webhook the gateway accepted is answered exactly once, the old records
are gone from the topics, and the counters go on from where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from omnichat.embedded import EmbeddedBroker, die_with_parent, free_port
from omnichat.recycle import BrokerRecycler
from omnichat.settings import Settings
from streams.offsets import end_offsets
from streams.topics import WEBHOOKS_RAW, bootstrap_servers, ensure_topics
from tests.conftest import Fakes, Gateway, Stack, Tenant, wait_until
from tests.integration.helpers import WorkerProcess, sign
from tests.integration.test_pipeline import (
    APP_SECRET,
    cloud_channel,
    cloud_text,
    make_agent,
    out_messages,
)
from tests.integration.test_restart_state import ok_view


async def raw_records(broker_url: str, partitions: int) -> int:
    """Records on ``webhooks.raw`` now."""
    tps = [TopicPartition(WEBHOOKS_RAW, p) for p in range(partitions)]
    return sum((await end_offsets(bootstrap_servers(broker_url), tps)).values())


def gateway_process(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``omnichat gateway`` in its own process group, so that it can be frozen as
    ``omnichat dev`` freezes its gateway."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "omnichat.cli", "gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


async def test_broker_restarted_empty_mid_stream_loses_nothing_accepted(
    settings: Settings,
    stack: Stack,
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    fakes: Fakes,
) -> None:
    broker = EmbeddedBroker(log_path=stack.tmp / "recycle-broker.log").start()
    local = settings.model_copy(
        update={
            "broker_url": broker.url,
            "gateway_port": free_port(),
            "llm_base_url": fakes.llm.base_url,
            "llm_api_key": SecretStr("sk-test"),
        }
    )
    await ensure_topics(broker.url, local.topic_partitions, configs=local.topic_configs)
    worker = WorkerProcess(local, stack.tmp / "recycle-worker.log")
    env = worker.env()
    env["OMNICHAT_GATEWAY_PORT"] = str(local.gateway_port)
    gw_proc = gateway_process(env, stack.tmp / "recycle-gateway.log")
    worker.start()
    http = aiohttp.ClientSession()
    own = Gateway(f"http://127.0.0.1:{local.gateway_port}", http, None, local)  # type: ignore[arg-type]
    recycler = BrokerRecycler(
        broker,
        group=worker.worker_id,
        partitions=local.topic_partitions,
        topic_configs=local.topic_configs,
        max_mb=1.0,  # any broker is past this: due at once
        pause_intake=lambda: os.killpg(gw_proc.pid, signal.SIGSTOP),
        resume_intake=lambda: os.killpg(gw_proc.pid, signal.SIGCONT),
        stop_workers=lambda: worker.stop(signal.SIGKILL),  # drained, as omnichat dev does
        start_workers=worker.start,
    )
    try:

        async def ready() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                status, _ = await own.call("GET", "/readyz")
                return status == 200
            return False

        await wait_until(ready, timeout=30)
        agent_id = await make_agent(pool, tenant.id)
        ch = await cloud_channel(gateway, tenant, fakes, agent_id)
        phone = ch["config"]["phone_number_id"]
        senders = [f"5531{uuid.uuid4().int % 10**9:09d}" for _ in range(6)]
        accepted: list[str] = []

        async def deliver(i: int) -> None:
            """One webhook, sent again on 503 as a provider would; recorded once accepted."""
            body = cloud_text(phone, senders[i % len(senders)], f"Pergunta {i}?")
            for _ in range(30):
                status, _ = await own.call(
                    "POST",
                    f"/api/v1/webhooks/whatsapp/{ch['id']}",
                    data=body,
                    headers={
                        "X-Hub-Signature-256": sign(body, APP_SECRET),
                        "Content-Type": "application/json",
                    },
                )
                if status == 200:
                    accepted.append(str(i))
                    return
                assert status == 503, status
                await asyncio.sleep(1.0)
            raise AssertionError(f"webhook {i} never accepted")

        async def stream(first: int, count: int) -> None:
            await asyncio.gather(*(deliver(first + k) for k in range(count)))

        await stream(0, 12)

        async def answered(n: int) -> bool:
            return len(await out_messages(pool, ch["id"])) >= n

        await wait_until(lambda: answered(12), timeout=90)
        before = await raw_records(broker.url, local.topic_partitions)
        assert before >= 12

        # More webhooks arrive while the broker is replaced: they wait or get a 503.
        during = asyncio.create_task(stream(12, 12))
        await asyncio.sleep(0.3)
        done = await asyncio.to_thread(recycler.recycle)
        await during
        assert done is not None and recycler.count == 1
        await stream(24, 6)

        await wait_until(lambda: answered(30), timeout=120)
        await asyncio.sleep(2.0)  # room for a duplicate to show up
        replies = await out_messages(pool, ch["id"])
        assert len(accepted) == 30 and len(replies) == 30
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n, count(DISTINCT in_reply_to) AS d FROM messages"
                " WHERE channel_id = %s AND direction = 'out' AND author = 'bot'",
                (ch["id"],),
            )
            row = await cur.fetchone()
        assert row["n"] == row["d"] == 30  # each inbound message answered once

        # The old log is gone: only what came after the restart is on the new broker.
        assert await raw_records(broker.url, local.topic_partitions) < 30

        today = datetime.now(UTC).date().isoformat()

        async def counted() -> Any:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT inbound_messages, outbound_messages FROM usage_records"
                    " WHERE workspace_id = %s",
                    (tenant.id,),
                )
                usage = await cur.fetchone()
            if not usage or usage["outbound_messages"] != 30:
                return None
            items = (await ok_view(worker, f"/usage?from={today}&to={today}", tenant))["items"]
            return usage if items and items[0]["outbound_messages"] == 30 else None

        usage = await wait_until(counted, timeout=60, interval=0.5)
        assert usage["inbound_messages"] == 30  # counted on from PostgreSQL, not from zero
        quota = await ok_view(worker, "/quota", tenant)
        assert {i["metric"]: i["used"] for i in quota["items"]}["inbound_messages"] == 30
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(gw_proc.pid, signal.SIGCONT)
            os.killpg(gw_proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            gw_proc.wait(15)
        if gw_proc.poll() is None:
            os.killpg(gw_proc.pid, signal.SIGKILL)
            gw_proc.wait()
        worker.stop()
        await http.close()
        broker.stop()
