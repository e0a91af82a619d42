"""Send isolation through the real worker: one channel's trouble costs the others nothing.

A provider that hangs, or answers 429 with a long Retry-After, gets its own fake server
here, so that its standing answer touches no other test's channel. The session worker
runs with the default send settings (deadline 15 s, breaker after 5 failures).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tests.conftest import Fakes, Gateway, Tenant, wait_until
from tests.fakes.graph_api import DEFAULT_ACCESS_TOKEN, FakeGraphAPI, RecordedRequest, graph_error
from tests.integration.helpers import WORKER_APP_NAME, count_rows, create_channel, read_topic
from tests.integration.test_pipeline import (
    APP_SECRET,
    cloud_text,
    make_agent,
    out_messages,
    post_cloud,
    sends_to,
)


async def channel_on(gw: Gateway, tenant: Tenant, fake: Any, agent_id: str, name: str) -> dict:
    """A Cloud channel whose provider is ``fake``."""
    config = {
        "phone_number_id": f"77{uuid.uuid4().int % 10**10:010d}",
        "access_token": DEFAULT_ACCESS_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": "v",
        "base_url": fake.base_url,
    }
    return await create_channel(gw, tenant, "whatsapp_cloud", config, name, agent_id)


def sender() -> str:
    return f"5511{uuid.uuid4().int % 10**9:09d}"


async def talk(gw: Gateway, ch: dict, senders: list[str], text: str = "Oi") -> None:
    """One inbound message from each sender, a few at a time."""
    phone_id = ch["config"]["phone_number_id"]
    for i in range(0, len(senders), 10):
        await asyncio.gather(
            *(post_cloud(gw, ch["id"], cloud_text(phone_id, s, text)) for s in senders[i : i + 10])
        )


async def sent_count(pool: AsyncConnectionPool, channel_ids: list[str]) -> int:
    return await count_rows(
        pool,
        "SELECT count(*) FROM messages WHERE channel_id = ANY(%s::uuid[])"
        " AND direction = 'out' AND status = 'sent'",
        channel_ids,
    )


async def test_a_hanging_provider_does_not_hold_other_channels(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    async with FakeGraphAPI() as hanging:
        hanging.always(200, delay=3600)  # accepts the connection, never answers
        stuck = await channel_on(gateway, tenant, hanging, agent_id, "hangs")
        others = [
            await channel_on(gateway, tenant, fakes.graph, agent_id, f"ok{i}") for i in range(4)
        ]
        stuck_senders = [sender() for _ in range(12)]
        other_senders = {ch["id"]: [sender() for _ in range(25)] for ch in others}

        await talk(gateway, stuck, stuck_senders[:6])  # the hang starts first...
        await hanging.wait_for_requests(1, timeout=60)
        await asyncio.gather(  # ...and keeps getting messages while the others flow
            talk(gateway, stuck, stuck_senders[6:]),
            *(talk(gateway, ch, other_senders[ch["id"]]) for ch in others),
        )

        async def all_others_sent() -> bool:
            return await sent_count(pool, [ch["id"] for ch in others]) == 100

        # Without isolation each batch holding a hung call waits for its timeouts and
        # retries (minutes for these 100); with it they go out as if nothing hung.
        await wait_until(all_others_sent, timeout=60, interval=0.25)
        for ch in others:
            for s in other_senders[ch["id"]]:
                assert len(sends_to(fakes.graph, s)) == 1
        # The hung channel's replies are not lost: each waits (claimed, or deferred).
        stuck_rows = await out_messages(pool, stuck["id"])
        assert len(stuck_rows) == 12
        assert {r["status"] for r in stuck_rows} <= {"pending", "sending"}
        assert len(hanging.requests) <= 8  # the channel's call slots; the rest deferred


async def test_a_429_with_retry_after_30_holds_neither_the_batch_nor_other_channels(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    agent_id = await make_agent(pool, tenant.id)
    async with FakeGraphAPI() as limited:
        limited.always(429, graph_error(130429, "(#130429) Rate limit hit"), {"Retry-After": "30"})
        slow = await channel_on(gateway, tenant, limited, agent_id, "limited")
        other = await channel_on(gateway, tenant, fakes.graph, agent_id, "fine")
        waiting = sender()
        await talk(gateway, slow, [waiting])
        await limited.wait_for_requests(1, timeout=60)
        senders = [sender() for _ in range(20)]
        await talk(gateway, other, senders)

        async def others_sent() -> bool:
            return await sent_count(pool, [other["id"]]) == 20

        # Well under the 30 s asked: the old stage slept them in-line, holding the batch.
        await wait_until(others_sent, timeout=25, interval=0.25)
        assert len(limited.requests) == 1  # not retried in-line, the channel is paused
        [row] = await out_messages(pool, slow["id"])
        assert row["status"] == "pending"
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT reason, attempts, not_before - now() AS wait FROM send_deferrals"
                " WHERE message_id = %s",
                (row["id"],),
            )
            deferral = await cur.fetchone()
        assert deferral is not None and deferral["reason"] == "rate_limited"
        assert deferral["attempts"] == 1 and deferral["wait"].total_seconds() > 15

        # Never lost: once the provider takes it again, the deferred reply goes out once.
        limited.clear_always()
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE send_deferrals SET not_before = now() WHERE message_id = %s", (row["id"],)
            )

        async def sent() -> bool:
            [r] = await out_messages(pool, slow["id"])
            return r["status"] == "sent"

        await wait_until(sent, timeout=60, interval=0.25)  # after the channel's pause ends
        assert len(sends_to(limited, waiting)) == 2  # the 429, then the one that went out
        assert (
            await count_rows(
                pool, "SELECT count(*) FROM send_deferrals WHERE message_id = %s", row["id"]
            )
            == 0
        )


async def test_a_database_failure_after_the_provider_accepted_sends_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    """The recording fails (a privilege error three times, as if revoked for a moment);
    the send is not made again, the recording is."""
    agent_id = await make_agent(pool, tenant.id)
    async with FakeGraphAPI() as provider:
        ch = await channel_on(gateway, tenant, provider, agent_id, "flaky-db")
        tag = uuid.uuid4().hex[:8]
        async with pool.connection() as conn:
            await conn.execute(f"CREATE SEQUENCE record_failures_{tag}")
            await conn.execute(
                f"CREATE FUNCTION refuse_record_{tag}() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN IF nextval('record_failures_{tag}') <= 3 THEN"
                "  RAISE EXCEPTION 'permission denied for table messages'"
                "  USING ERRCODE = 'insufficient_privilege'; END IF; RETURN NEW; END $$"
            )
            await conn.execute(
                f"CREATE TRIGGER refuse_record_{tag} BEFORE UPDATE ON messages FOR EACH ROW"
                " WHEN (NEW.provider_message_id IS NOT NULL AND OLD.provider_message_id IS NULL"
                f" AND NEW.channel_id = '{ch['id']}') EXECUTE FUNCTION refuse_record_{tag}()"
            )
        try:
            customer = sender()
            await talk(gateway, ch, [customer])

            async def sent() -> bool:
                rows = await out_messages(pool, ch["id"])
                return bool(rows) and rows[0]["status"] == "sent"

            await wait_until(sent, timeout=60, interval=0.25)
            await asyncio.sleep(1.5)  # room for a second send, were one coming
            assert len(sends_to(provider, customer)) == 1
            [row] = await out_messages(pool, ch["id"])
            assert row["provider_message_id"] == provider.issued_ids[0]
            async with pool.connection() as conn:
                cur = await conn.execute(f"SELECT last_value FROM record_failures_{tag}")
                assert (await cur.fetchone())["last_value"] >= 4  # it did fail, and passed
        finally:
            async with pool.connection() as conn:
                await conn.execute(f"DROP TRIGGER refuse_record_{tag} ON messages")
                await conn.execute(f"DROP FUNCTION refuse_record_{tag}()")
                await conn.execute(f"DROP SEQUENCE record_failures_{tag}")


async def test_connections_cut_right_after_the_provider_accepted_sends_once(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    """Every database connection of the worker is terminated while the provider answers."""
    agent_id = await make_agent(pool, tenant.id)
    async with FakeGraphAPI() as provider:
        ch = await channel_on(gateway, tenant, provider, agent_id, "cut")
        cut: list[int] = []

        async def terminate(request: RecordedRequest) -> None:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (WORKER_APP_NAME,),
                )
                cut.append((await cur.fetchone())["n"])
            provider.on_accept = None  # once

        provider.on_accept = terminate
        customer = sender()
        await talk(gateway, ch, [customer])

        async def sent() -> bool:
            rows = await out_messages(pool, ch["id"])
            return bool(rows) and rows[0]["status"] == "sent"

        await wait_until(sent, timeout=90, interval=0.25)
        await asyncio.sleep(1.5)
        assert cut and cut[0] >= 1
        assert len(sends_to(provider, customer)) == 1


async def test_a_provider_id_postgresql_refuses_is_sent_once_and_recorded_without_it(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, fakes: Fakes
) -> None:
    """A NUL in the answer's message id: the same failure every time, so not retried; the
    message is recorded sent without the id, a dead letter says so, and it goes out once."""
    agent_id = await make_agent(pool, tenant.id)
    async with FakeGraphAPI() as provider:
        provider.always(200, {"messaging_product": "whatsapp", "messages": [{"id": "wamid.\x00x"}]})
        ch = await channel_on(gateway, tenant, provider, agent_id, "nul-id")
        customer = sender()
        await talk(gateway, ch, [customer])

        async def sent() -> dict | None:
            rows = await out_messages(pool, ch["id"])
            return rows[0] if rows and rows[0]["status"] == "sent" else None

        row = await wait_until(sent, timeout=60, interval=0.25)
        await asyncio.sleep(1.5)
        assert row["provider_message_id"] is None
        assert len(sends_to(provider, customer)) == 1

        async def dead() -> list[Any]:
            recs = await read_topic(gateway.settings.broker_url or "", "deadletter")
            return [json.loads(r.value) for r in recs if ch["id"] in r.value.decode()]

        [letter] = await wait_until(dead, timeout=30)
        assert letter["error_code"] == "data_error"
