"""After a restart of the worker and of the broker, the tables go on from PostgreSQL's figures.

The embedded broker keeps nothing across a restart, so the changelogs the tables are
rebuilt from are gone: the worker must seed its quota counters, usage counters and
workspace statistics from the database (streams/seed.py) before it handles anything.
Each test starts its own broker, gateway and worker, so that the restart is real and
the session's shared broker is left alone.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from omnichat.embedded import EmbeddedBroker
from omnichat.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import Fakes, Gateway, Stack, Tenant, start_gateway, wait_until
from tests.integration.helpers import WorkerProcess
from tests.integration.test_admin_views import view
from tests.integration.test_pipeline import cloud_channel, cloud_text, make_agent, post_cloud
from tests.integration.test_quota import runs_of, set_limits


@dataclass
class Site:
    """A broker of its own with a gateway and a worker on it."""

    broker: EmbeddedBroker
    gateway: Gateway
    worker: WorkerProcess
    runner: Any

    async def close(self) -> None:
        """Worker, gateway, then broker (its topics vanish with it)."""
        self.worker.stop()
        await self.gateway.http.close()
        await self.runner.cleanup()
        self.broker.stop()


class Sites:
    """Starts sites for one test and stops whatever is left at its end."""

    def __init__(self, settings: Settings, tmp: Path, fakes: Fakes) -> None:
        self.settings = settings
        self.tmp = tmp
        self.fakes = fakes
        self.open: list[Site] = []

    async def start(self, name: str) -> Site:
        """A fresh broker (empty: no topics, no changelogs), its topics, gateway and worker."""
        broker = EmbeddedBroker(log_path=self.tmp / f"{name}-broker.log").start()
        local = self.settings.model_copy(
            update={
                "broker_url": broker.url,
                "llm_base_url": self.fakes.llm.base_url,
                "llm_api_key": SecretStr("sk-test"),
            }
        )
        await ensure_topics(broker.url, local.topic_partitions)
        runner, url, app = await start_gateway(local)
        gw = Gateway(url, aiohttp.ClientSession(), app, local)
        worker = WorkerProcess(local, self.tmp / f"{name}-worker.log").start()
        site = Site(broker, gw, worker, runner)
        self.open.append(site)
        return site

    async def stop(self, site: Site) -> None:
        """Stop a site: its broker's log is lost, as when `omnichat dev` stops."""
        self.open.remove(site)
        await site.close()


@pytest_asyncio.fixture(loop_scope="session")
async def sites(settings: Settings, stack: Stack, fakes: Fakes) -> AsyncIterator[Sites]:
    """Sites of one test (stopped at its end)."""
    s = Sites(settings, stack.tmp, fakes)
    yield s
    for site in list(s.open):
        await s.stop(site)


async def ok_view(worker: WorkerProcess, path: str, tenant: Tenant, timeout: float = 90) -> Any:
    """A view's body once the worker answers 200 (it answers 503 until it has seeded)."""

    async def get() -> Any:
        try:
            status, body = await view(worker, path, tenant.headers())
        except aiohttp.ClientError:
            return None  # the web server is not up yet
        return body if status == 200 else None

    return await wait_until(get, timeout=timeout, interval=0.5)


async def database_figures(pool: AsyncConnectionPool, tenant: Tenant) -> dict[str, Any]:
    """What PostgreSQL holds for the workspace: usage, open conversations, quota used."""
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT day, inbound_messages, outbound_messages, llm_prompt_tokens,"
            " llm_completion_tokens FROM usage_records WHERE workspace_id = %s ORDER BY day",
            (tenant.id,),
        )
        usage = [{"period": r.pop("day").isoformat(), **r} for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'open') AS open FROM conversations"
            " WHERE workspace_id = %s",
            (tenant.id,),
        )
        conversations = (await cur.fetchone())["open"]
        cur = await conn.execute(
            "SELECT count(*) AS answered, coalesce(sum(prompt_tokens + completion_tokens)"
            " FILTER (WHERE outcome <> 'offline'), 0) AS tokens FROM agent_runs"
            " WHERE workspace_id = %s AND created_at >= %s",
            (tenant.id, month_start),
        )
        quota = await cur.fetchone()
    return {
        "usage": usage,
        "open": conversations,
        "answered": quota["answered"],
        "tokens": quota["tokens"],
    }


async def view_figures(worker: WorkerProcess, tenant: Tenant) -> dict[str, Any]:
    """The same figures as the worker's admin views show them."""
    today = datetime.now(UTC).date().isoformat()
    usage = await ok_view(worker, f"/usage?from={today}&to={today}", tenant)
    conversations = await ok_view(worker, "/conversations", tenant)
    quota = await ok_view(worker, "/quota", tenant)
    used = {i["metric"]: i["used"] for i in quota["items"]}
    return {
        "usage": usage["items"],
        "open": conversations["open"],
        "answered": used["inbound_messages"],
        "tokens": used["llm_tokens"],
    }


async def test_quota_and_views_go_on_from_the_database_after_worker_and_broker_restart(
    sites: Sites, gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, fakes: Fakes
) -> None:
    await set_limits(gateway, tenant, inbound_messages=2)  # the limit lives in PostgreSQL
    agent_id = await make_agent(pool, tenant.id, system_prompt=f"Atendente {uuid.uuid4().hex}.")
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    phone = ch["config"]["phone_number_id"]
    ana, bia, caio = (f"5511{uuid.uuid4().int % 10**9:09d}" for _ in range(3))

    async def say(site: Site, sender: str, text: str, runs: int) -> None:
        """One message, answered before the next (the quota counts them in this order)."""
        await post_cloud(site.gateway, ch["id"], cloud_text(phone, sender, text))

        async def answered() -> bool:
            return len(await runs_of(pool, tenant.id)) == runs

        await wait_until(answered, timeout=90)

    first = await sites.start("first")
    await say(first, ana, "Oi, tudo bem?", 1)
    await say(first, ana, "Vocês abrem domingo?", 2)
    await say(first, bia, "Qual o horário?", 3)  # past the limit of 2: the fallback
    assert [r["outcome"] for r in await runs_of(pool, tenant.id)] == [
        "ok",
        "ok",
        "quota_exceeded",
    ]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT c.id FROM conversations c JOIN contacts p ON p.id = c.contact_id"
            " WHERE c.channel_id = %s AND p.external_id = %s",
            (ch["id"], ana),
        )
        ana_conversation = (await cur.fetchone())["id"]
    status, body = await first.gateway.call(
        "PATCH",
        f"/api/v1/conversations/{ana_conversation}",
        headers=tenant.headers(),
        json={"status": "closed"},
    )
    assert status == 200, body

    async def settled() -> dict | None:
        """Every usage event counted and copied (three replies out, the close folded in)."""
        db = await database_figures(pool, tenant)
        seen = await view_figures(first.worker, tenant)
        done = db["usage"] and db["usage"][-1]["outbound_messages"] == 3 and seen["open"] == 1
        return seen if done and seen == db else None

    before = await wait_until(settled, timeout=60, interval=0.5)
    assert before["answered"] == 3 and before["tokens"] > 0

    # Stop everything: the broker's log, changelogs included, is gone with it.
    await sites.stop(first)
    second = await sites.start("second")
    after = await view_figures(second.worker, tenant)
    assert after == await database_figures(pool, tenant)
    assert after == before  # from where it was, not from zero
    channels = await ok_view(second.worker, "/channels", tenant)
    assert channels["items"] == [{"channel_id": ch["id"], "inbound": 3, "outbound": 3}]

    # The workspace is still past its limit: the next message gets the fallback, no LLM call.
    calls = len(fakes.llm.chat_requests)
    await say(second, bia, "Alguém aí?", 4)
    await say(second, caio, "Bom dia", 5)  # a new conversation
    assert [r["outcome"] for r in await runs_of(pool, tenant.id)][3:] == [
        "quota_exceeded",
        "quota_exceeded",
    ]
    assert len(fakes.llm.chat_requests) == calls

    async def counted_on() -> dict | None:
        db = await database_figures(pool, tenant)
        seen = await view_figures(second.worker, tenant)
        done = db["usage"] and db["usage"][-1]["outbound_messages"] == 5
        return seen if done and seen == db else None

    final = await wait_until(counted_on, timeout=60, interval=0.5)
    assert final["answered"] == 5 and final["open"] == 2
    assert final["usage"][-1]["inbound_messages"] == 5  # 3 before the restart, 2 after
    channels = await ok_view(second.worker, "/channels", tenant)
    assert channels["items"] == [{"channel_id": ch["id"], "inbound": 5, "outbound": 5}]


async def test_a_restarted_worker_on_the_same_broker_counts_nothing_twice(
    sites: Sites, gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, fakes: Fakes
) -> None:
    """With the changelogs intact, raising to the database's figures changes nothing: the
    copy in PostgreSQL is never ahead of the changelog."""
    agent_id = await make_agent(pool, tenant.id)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    phone = ch["config"]["phone_number_id"]
    site = await sites.start("same")
    for i in range(4):
        sender = f"5521{uuid.uuid4().int % 10**9:09d}"
        await post_cloud(site.gateway, ch["id"], cloud_text(phone, sender, f"Pergunta {i}?"))

    async def settled() -> dict | None:
        db = await database_figures(pool, tenant)
        seen = await view_figures(site.worker, tenant)
        done = db["usage"] and db["usage"][-1]["outbound_messages"] == 4
        return seen if done and seen == db else None

    before = await wait_until(settled, timeout=90, interval=0.5)
    site.worker.stop(signal.SIGKILL)
    site.worker.start()  # same consumer group, same broker: the changelogs are there
    await asyncio.sleep(1.0)
    after = await view_figures(site.worker, tenant)
    assert after == before == await database_figures(pool, tenant)
    assert after["answered"] == 4 and after["open"] == 4
