"""A model an agent version names is a metric label only if it is known: else ``other``."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Fakes, Gateway, Tenant, wait_until
from tests.integration.helpers import metric_total
from tests.integration.test_pipeline import (
    cloud_channel,
    cloud_text,
    make_agent,
    out_messages,
    post_cloud,
)


async def metrics_text(url: str) -> str:
    """The worker's /metrics page."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        assert r.status == 200
        return await r.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying these label values."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


async def test_unknown_model_is_labelled_other(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    await metric_total(worker.web_url, "omnichat_llm_calls_total")  # its web is up
    before = sample(await metrics_text(worker.web_url), "omnichat_llm_calls_total", model="other")
    private = f"acme-private-llm-{uuid.uuid4().hex}"
    agent_id = await make_agent(pool, tenant.id, model=private)
    ch = await cloud_channel(gateway, tenant, fakes, agent_id)
    sender = f"5521{uuid.uuid4().int % 10**9:09d}"
    await post_cloud(gateway, ch["id"], cloud_text(ch["config"]["phone_number_id"], sender, "Oi"))

    async def sent() -> bool:
        rows = await out_messages(pool, ch["id"])
        return bool(rows) and rows[0]["status"] == "sent"

    await wait_until(sent, timeout=90)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT model FROM agent_runs WHERE workspace_id = %s", (tenant.id,)
        )
        assert [r["model"] for r in await cur.fetchall()] == [private], "the run keeps it"

    async def counted() -> str | None:
        text = await metrics_text(worker.web_url)
        calls = sample(text, "omnichat_llm_calls_total", model="other")
        return text if calls >= before + 1 else None

    text = await wait_until(counted, timeout=30)
    assert private not in text, "a version's free text never becomes a label"
    assert sample(text, "omnichat_llm_tokens_total", model="other") > 0
