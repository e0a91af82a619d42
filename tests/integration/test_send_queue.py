"""The send stage's rows in PostgreSQL: claims that expire, deferrals, and the sweep.

Driven through ``deliver_batch`` and ``storage.send_queue`` directly: the claim a second
worker meets, a conversation's order behind a deferred message, stale copies; then the
session worker's sweep sends what came due, in order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from psycopg_pool import AsyncConnectionPool

from agents_pipeline.reply import prepare_replies
from agents_pipeline.send import LEASE, SendPolicy, SendState, deliver_batch
from storage import bulk, send_queue
from storage.secrets import SecretBox
from streams.contracts import SendRequest
from tests.conftest import Gateway, Tenant, wait_until
from tests.integration.test_stage_batches import (
    in_workspace,
    inbound,
    reply_to,
    run_batch,
    sandbox_channel,
)


async def replies(
    gw: Gateway, tenant: Tenant, pool: AsyncConnectionPool, contacts: list[str]
) -> list[SendRequest]:
    """One pending bot reply per contact name given (a name twice: two in one conversation)."""
    ch = in_workspace(await sandbox_channel(gw, tenant, pool), tenant)
    resolved = await run_batch(pool, [inbound(ch, c, f"q{i}", n=i) for i, c in enumerate(contacts)])
    async with pool.connection() as conn:
        reqs = await prepare_replies(conn, [reply_to(o, f"r{i}") for i, o in enumerate(resolved)])
    return [r for r in reqs if r is not None]


async def statuses(pool: AsyncConnectionPool, reqs: list[SendRequest]) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, status FROM messages WHERE id = ANY(%s)", ([r.outbound_id for r in reqs],)
        )
        by_id = {r["id"]: r["status"] for r in await cur.fetchall()}
    return [by_id[r.outbound_id] for r in reqs]


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_claim_held_by_another_worker_is_deferred_not_sent(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    [req] = await replies(gateway, tenant, pool, ["a"])
    other = uuid.uuid4()  # a worker that claimed it and is still sending
    async with pool.connection() as conn:
        claimed, _ = await bulk.claim_for_send(
            conn, [(req.workspace_id, req.outbound_id)], claimer=other, lease_seconds=LEASE
        )
    assert claimed == {req.outbound_id}
    box = SecretBox(SecretBox.generate_key())
    async with aiohttp.ClientSession() as http:
        [out] = await deliver_batch(pool, http, [req], box=box, now=now)
    assert out.sent is None and out.deferred == "in_flight_elsewhere"
    assert await statuses(pool, [req]) == ["sending"]  # the holder's claim is untouched
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT not_before - now() AS wait FROM send_deferrals WHERE message_id = %s",
            (req.outbound_id,),
        )
        wait = (await cur.fetchone())["wait"]
    assert timedelta(seconds=LEASE - 10) < wait <= timedelta(seconds=LEASE)

    # The same worker takes its own claim back at once (a retried batch) ...
    async with pool.connection() as conn:
        again, held = await bulk.claim_for_send(
            conn, [(req.workspace_id, req.outbound_id)], claimer=other, lease_seconds=LEASE
        )
    assert again == {req.outbound_id} and held == {}
    # ... and anyone may once the claim ran out (its worker died).
    async with pool.connection() as conn:
        late, _ = await bulk.claim_for_send(
            conn, [(req.workspace_id, req.outbound_id)], claimer=uuid.uuid4(), lease_seconds=0
        )
    assert late == {req.outbound_id}


async def test_a_conversation_waits_behind_its_deferred_message_then_goes_out_in_order(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any
) -> None:
    """The stage's decisions here; the sweep and the sends are the session worker's (its
    sweep takes every due deferral in the database, so no test may sweep in its stead)."""
    first, second, elsewhere = await replies(gateway, tenant, pool, ["c", "c", "d"])
    policy = SendPolicy()
    state = SendState(policy)
    box = SecretBox(SecretBox.generate_key())
    kw: dict[str, Any] = {"box": box, "now": now, "policy": policy, "state": state}
    # ``first`` is deferred (as a rate limit would), in the stage's own way.
    async with pool.connection() as conn, conn.transaction():
        await send_queue.defer(
            conn,
            [
                send_queue.Deferral(
                    workspace_id=first.workspace_id,
                    message_id=first.outbound_id,
                    channel_id=first.channel_id,
                    conversation_id=first.conversation_id,
                    request=first.model_dump(mode="json"),
                    reason="rate_limited",
                    attempts=1,
                    not_before=now() + timedelta(seconds=600),
                )
            ],
        )
    async with aiohttp.ClientSession() as http:
        # A stale copy of ``first`` (from before its deferral) is dropped; ``second`` waits
        # behind it; another conversation is not held.
        outs = await deliver_batch(pool, http, [first, second, elsewhere], **kw)
    assert [o.sent is None for o in outs] == [True, True, False]
    assert [o.deferred for o in outs] == [None, "behind_deferred", None]
    assert await statuses(pool, [first, second, elsewhere]) == ["pending", "pending", "sent"]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT message_id, reason, not_before FROM send_deferrals"
            " WHERE conversation_id = %s ORDER BY not_before, message_id",
            (first.conversation_id,),
        )
        rows = {r["message_id"]: r for r in await cur.fetchall()}
    assert rows[second.outbound_id]["reason"] == "behind_deferred"
    assert rows[second.outbound_id]["not_before"] == rows[first.outbound_id]["not_before"]

    # Due now: the worker's sweep produces both again, oldest first, and they go out in order.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE send_deferrals SET not_before = now() WHERE conversation_id = %s",
            (first.conversation_id,),
        )

    async def both_sent() -> list[datetime] | None:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, status, sent_at FROM messages WHERE id = ANY(%s)",
                ([first.outbound_id, second.outbound_id],),
            )
            found = {r["id"]: r for r in await cur.fetchall()}
        if all(r["status"] == "sent" for r in found.values()):
            return [found[first.outbound_id]["sent_at"], found[second.outbound_id]["sent_at"]]
        return None

    sent_at = await wait_until(both_sent, timeout=60, interval=0.25)
    assert sent_at[0] <= sent_at[1]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM send_deferrals WHERE conversation_id = %s",
            (first.conversation_id,),
        )
        assert (await cur.fetchone())["n"] == 0
