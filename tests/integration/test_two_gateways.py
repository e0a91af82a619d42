"""Two gateway processes and a worker's admin views: what one process changes, all see at once.

The second gateway is ``omnichat gateway`` in a child process (its own caches, as in
production), trusting a cached key for 60 s; the session worker's views trust one for 30 s.
So a 401 right after a revocation can only come from the auth epoch, not from a cache
that happened to expire. No sleep stands between a change and its check.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.auth import KeyCache
from gateway.auth_epoch import AuthEpoch
from gateway.resp import RespClient
from omnichat.embedded import free_port
from omnichat.settings import Settings
from tests.conftest import ADMIN_TOKEN, Gateway, Stack, Tenant, make_tenant
from tests.integration.helpers import GatewayProcess, metric_total


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def other_gateway(
    settings: Settings, stack: Stack, migrated: str
) -> AsyncIterator[GatewayProcess]:
    """A second gateway process on the session's services, with a long auth cache."""
    proc = GatewayProcess(
        settings,
        stack.tmp / f"gateway-{uuid.uuid4().hex[:6]}.log",
        auth_cache_seconds="60",
        tap_max_open_per_workspace="2",
    )
    await proc.start().ready()
    yield proc
    proc.stop()


async def call(url: str, path: str, key: str, workspace: str, method: str = "GET") -> int:
    """Status of one request with an API key."""
    headers = {"Authorization": f"Bearer {key}", "X-Workspace-ID": workspace}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, headers=headers) as r,
    ):
        await r.read()
        return r.status


async def new_key(gw: Gateway, t: Tenant, scopes: list[str]) -> dict[str, Any]:
    """A new API key of the workspace."""
    status, key = await gw.call(
        "POST",
        "/api/v1/auth/keys",
        key=t.key,
        workspace=t.id,
        json={"name": f"k-{uuid.uuid4().hex[:6]}", "scopes": scopes},
    )
    assert status == 201, key
    return key


async def test_revocation_is_at_once_in_every_process(
    gateway: Gateway, tenant: Tenant, other_gateway: GatewayProcess, worker: Any
) -> None:
    key = await new_key(gateway, tenant, ["read"])
    me = "/api/v1/tenants/workspace"
    # Each process loads (and caches) the key first.
    assert await call(other_gateway.url, me, key["key"], tenant.id) == 200
    await metric_total(worker.web_url, "omnichat_stage_events_in_total")  # its web is up
    view = worker.web_url + "/api/v1/stats/quota"

    async def view_status() -> int:
        return await call(view, "", key["key"], tenant.id)

    assert await view_status() in (200, 503), "authenticated (503: partitions still moving)"
    assert await call(gateway.url, me, key["key"], tenant.id) == 200

    status, _ = await gateway.call(
        "DELETE", f"/api/v1/auth/keys/{key['id']}", key=tenant.key, workspace=tenant.id
    )
    assert status == 204
    assert await call(other_gateway.url, me, key["key"], tenant.id) == 401
    assert await view_status() == 401

    # And the other way round: revoked by the child process, refused here at once.
    second = await new_key(gateway, tenant, ["admin"])
    assert await call(gateway.url, me, second["key"], tenant.id) == 200
    path = f"/api/v1/auth/keys/{second['id']}"
    assert await call(other_gateway.url, path, tenant.key, tenant.id, "DELETE") == 204
    assert await call(gateway.url, me, second["key"], tenant.id) == 401


async def test_deactivation_is_at_once_in_every_process(
    gateway: Gateway, other_gateway: GatewayProcess, worker: Any
) -> None:
    t = await make_tenant(gateway, "Deactivated at once")
    me = "/api/v1/tenants/workspace"
    view = worker.web_url + "/api/v1/stats/channels"
    await metric_total(worker.web_url, "omnichat_stage_events_in_total")  # its web is up
    assert await call(other_gateway.url, me, t.key, t.id) == 200
    assert await call(view, "", t.key, t.id) in (200, 503)

    async def set_active(active: bool) -> None:
        status, body = await gateway.call(
            "PATCH",
            f"/api/v1/tenants/workspaces/{t.id}",
            key=ADMIN_TOKEN,
            json={"is_active": active},
        )
        assert status == 200, body

    await set_active(False)
    assert await call(other_gateway.url, me, t.key, t.id) == 403
    assert await call(view, "", t.key, t.id) == 403
    await set_active(True)
    assert await call(other_gateway.url, me, t.key, t.id) == 200


async def test_channel_change_is_at_once_in_every_process(
    gateway: Gateway, tenant: Tenant, other_gateway: GatewayProcess
) -> None:
    """A leaked webhook token, replaced in one process, stops working in the others."""
    from tests.integration.helpers import create_channel

    config = {
        "base_url": "http://127.0.0.1:9",
        "instance": "evo",
        "api_key": "k",
        "webhook_token": "old-token",
    }
    ch = await create_channel(gateway, tenant, "evolution", config)
    hook = f"{other_gateway.url}/api/v1/webhooks/evolution/{ch['id']}"
    body = b'{"event": "connection.update", "instance": "evo", "data": {"state": "open"}}'
    async with aiohttp.ClientSession() as http:

        async def post(token: str) -> int:
            async with http.post(hook, data=body, params={"token": token}) as r:
                return r.status

        assert await post("old-token") == 200  # cached in the child process now
        status, _ = await gateway.call(
            "PATCH",
            f"/api/v1/channels/{ch['id']}",
            key=tenant.key,
            workspace=tenant.id,
            json={"config": {"webhook_token": "new-token"}},
        )
        assert status == 200
        assert await post("old-token") == 401
        assert await post("new-token") == 200


async def test_tap_limit_counts_every_process(
    gateway: Gateway,
    tenant: Tenant,
    other_gateway: GatewayProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.services import SERVICES

    monkeypatch.setattr(gateway.app[SERVICES].settings, "tap_max_open_per_workspace", 2)
    headers = tenant.headers()
    async with aiohttp.ClientSession() as http:
        first = await http.get(f"{other_gateway.url}/api/v1/taps/audit.events", headers=headers)
        second = await http.get(f"{gateway.url}/api/v1/taps/usage.events", headers=headers)
        try:
            assert first.status == 200 and second.status == 200
            async with http.get(f"{gateway.url}/api/v1/taps/audit.events", headers=headers) as r:
                assert r.status == 429
                body = await r.json()
                assert body["error"]["code"] == "too_many_taps"
                assert body["error"]["details"]["scope"] == "workspace"
            other = await make_tenant(gateway, "Another tapper")
            async with http.get(
                f"{other_gateway.url}/api/v1/taps/audit.events", headers=other.headers()
            ) as r:
                assert r.status == 200, "the limit is per workspace"
        finally:
            first.close()
            second.close()

        async def freed() -> bool:
            async with http.get(f"{gateway.url}/api/v1/taps/audit.events", headers=headers) as r:
                return r.status == 200

        # Closing a tap gives its place back (each gateway notices its client left).
        deadline = asyncio.get_running_loop().time() + 15
        while not await freed():
            assert asyncio.get_running_loop().time() < deadline, "a closed tap kept its place"
            await asyncio.sleep(0.2)


async def test_unreachable_redis_trusts_the_cache_briefly_only(
    gateway: Gateway, tenant: Tenant
) -> None:
    """Fail closed: without the epoch, a cached key holds for the unverified time only."""
    from gateway.services import SERVICES

    epoch = AuthEpoch(RespClient(f"redis://127.0.0.1:{free_port()}/0"))
    assert await epoch.current() is None  # nothing listens there
    cache = KeyCache(ttl=3600.0, epoch=epoch, unverified_ttl=0.0)
    pool = gateway.app[SERVICES].pool
    key = await new_key(gateway, tenant, ["read"])
    import hashlib

    key_hash = hashlib.sha256(key["key"].encode()).hexdigest()
    row = await cache.lookup(pool, key_hash)
    assert row is not None and row["revoked_at"] is None
    status, _ = await gateway.call(
        "DELETE", f"/api/v1/auth/keys/{key['id']}", key=tenant.key, workspace=tenant.id
    )
    assert status == 204
    row = await cache.lookup(pool, key_hash)
    assert row is not None and row["revoked_at"] is not None, "read again, not trusted"
