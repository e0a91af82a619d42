"""Workspaces, API keys, members and the audit log through the REST API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from tests.conftest import ADMIN_TOKEN, Gateway, Tenant, make_tenant


async def test_admin_token_required(gateway: Gateway) -> None:
    status, body = await gateway.call("POST", "/api/v1/tenants/workspaces", json={"name": "X"})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, _ = await gateway.call("GET", "/api/v1/tenants/workspaces", key="wrong")
    assert status == 401


async def test_workspace_lifecycle(gateway: Gateway, pool: AsyncConnectionPool) -> None:
    status, ws = await gateway.call(
        "POST",
        "/api/v1/tenants/workspaces",
        key=ADMIN_TOKEN,
        json={"name": "Padaria São João", "plan": "pro"},
    )
    assert status == 201
    assert ws["name"] == "Padaria São João" and ws["plan"] == "pro" and ws["is_active"]
    key = ws["api_key"]
    assert key["scopes"] == ["admin"] and key["key"].startswith(key["prefix"] + "_")
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT key_hash, prefix FROM api_keys WHERE id = %s", (key["id"],)
        )
        row = await cur.fetchone()
    assert row["key_hash"] != key["key"] and key["key"] not in row["key_hash"]

    status, own = await gateway.call(
        "GET", "/api/v1/tenants/workspace", key=key["key"], workspace=ws["id"]
    )
    assert status == 200 and own["id"] == ws["id"]

    status, listed = await gateway.call(
        "GET", "/api/v1/tenants/workspaces?limit=200", key=ADMIN_TOKEN
    )
    assert status == 200 and ws["id"] in [w["id"] for w in listed["items"]]
    assert all("api_key" not in w for w in listed["items"])

    status, patched = await gateway.call(
        "PATCH",
        f"/api/v1/tenants/workspaces/{ws['id']}",
        key=ADMIN_TOKEN,
        json={"is_active": False},
    )
    assert status == 200 and patched["is_active"] is False
    status, body = await gateway.call(
        "GET", "/api/v1/tenants/workspace", key=key["key"], workspace=ws["id"]
    )
    assert status == 403 and body["error"]["code"] == "workspace_inactive"
    await gateway.call(
        "PATCH",
        f"/api/v1/tenants/workspaces/{ws['id']}",
        key=ADMIN_TOKEN,
        json={"is_active": True, "name": "Padaria"},
    )
    status, own = await gateway.call(
        "GET", "/api/v1/tenants/workspace", key=key["key"], workspace=ws["id"]
    )
    assert status == 200 and own["name"] == "Padaria"

    status, body = await gateway.call(
        "PATCH", f"/api/v1/tenants/workspaces/{ws['id']}", key=ADMIN_TOKEN, json={"plan": "nope"}
    )
    assert status == 422 and body["error"]["code"] == "unknown_plan"


async def test_pagination_with_cursor(gateway: Gateway) -> None:
    for i in range(3):
        await make_tenant(gateway, f"page-{i}")
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        path = "/api/v1/tenants/workspaces?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, body = await gateway.call("GET", path, key=ADMIN_TOKEN)
        assert status == 200 and len(body["items"]) <= 2
        seen += [w["id"] for w in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) >= 3
    status, body = await gateway.call(
        "GET", "/api/v1/tenants/workspaces?cursor=garbage", key=ADMIN_TOKEN
    )
    assert status == 400 and body["error"]["code"] == "invalid_cursor"


async def test_key_lifecycle_revocation_is_immediate(gateway: Gateway, tenant: Tenant) -> None:
    status, new = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "ci", "scopes": ["read"]},
    )
    assert status == 201 and new["key"] and new["scopes"] == ["read"]
    status, listed = await gateway.call(
        "GET", "/api/v1/auth/keys", key=tenant.key, workspace=tenant.id
    )
    assert status == 200
    assert {k["id"] for k in listed["items"]} == {tenant.key_id, new["id"]}
    assert all("key" not in k for k in listed["items"])
    status, _ = await gateway.call(
        "GET", "/api/v1/tenants/workspace", key=new["key"], workspace=tenant.id
    )
    assert status == 200  # now cached
    status, _ = await gateway.call(
        "DELETE", f"/api/v1/auth/keys/{new['id']}", key=tenant.key, workspace=tenant.id
    )
    assert status == 204
    status, body = await gateway.call(
        "GET", "/api/v1/tenants/workspace", key=new["key"], workspace=tenant.id
    )
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_key_revoked_elsewhere_stops_within_cache_time(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    status, new = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "x", "scopes": ["admin"]},
    )
    assert status == 201
    assert (
        await gateway.call("GET", "/api/v1/tenants/workspace", key=new["key"], workspace=tenant.id)
    )[0] == 200
    async with pool.connection() as conn:  # another gateway process revokes it
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (new["id"],))
    await asyncio.sleep(gateway.settings.auth_cache_seconds + 0.2)
    assert (
        await gateway.call("GET", "/api/v1/tenants/workspace", key=new["key"], workspace=tenant.id)
    )[0] == 401


async def test_key_expiry(gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, new = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "tmp", "scopes": ["admin"], "expires_at": soon},
    )
    assert status == 201 and new["expires_at"]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
            (new["id"],),
        )
    await asyncio.sleep(gateway.settings.auth_cache_seconds + 0.2)
    status, body = await gateway.call(
        "GET", "/api/v1/tenants/workspace", key=new["key"], workspace=tenant.id
    )
    assert status == 401 and "expired" in body["error"]["message"]
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    status, _ = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "old", "scopes": ["admin"], "expires_at": past},
    )
    assert status == 422


async def test_read_scope_is_get_only(gateway: Gateway, tenant: Tenant) -> None:
    _, ro = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "ro", "scopes": ["read"]},
    )
    assert (await gateway.call("GET", "/api/v1/channels/", key=ro["key"], workspace=tenant.id))[
        0
    ] == 200
    status, body = await gateway.call(
        "POST",
        "/api/v1/channels/",
        key=ro["key"],
        workspace=tenant.id,
        json={"name": "s", "provider": "sandbox", "config": {}},
    )
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    status, _ = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=ro["key"],
        workspace=tenant.id,
        json={"name": "esc", "scopes": ["admin"]},
    )
    assert status == 403


async def test_members_and_audit(gateway: Gateway, tenant: Tenant) -> None:
    status, m = await gateway.call(
        "POST",
        "/api/v1/tenants/members",
        key=tenant.key,
        workspace=tenant.id,
        json={"email": "joao@example.com.br", "role": "admin"},
    )
    assert status == 201 and m["role"] == "admin"
    status, body = await gateway.call(
        "POST",
        "/api/v1/tenants/members",
        key=tenant.key,
        workspace=tenant.id,
        json={"email": "JOAO@example.com.br", "role": "member"},
    )
    assert status == 409 and body["error"]["code"] == "member_exists"
    status, m2 = await gateway.call(
        "PATCH",
        f"/api/v1/tenants/members/{m['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"role": "owner"},
    )
    assert status == 200 and m2["role"] == "owner"
    _, listed = await gateway.call(
        "GET", "/api/v1/tenants/members", key=tenant.key, workspace=tenant.id
    )
    assert [x["email"] for x in listed["items"]] == ["joao@example.com.br"]
    status, _ = await gateway.call(
        "DELETE", f"/api/v1/tenants/members/{m['id']}", key=tenant.key, workspace=tenant.id
    )
    assert status == 204
    status, _ = await gateway.call(
        "DELETE", f"/api/v1/tenants/members/{m['id']}", key=tenant.key, workspace=tenant.id
    )
    assert status == 404

    status, log = await gateway.call(
        "GET", "/api/v1/audit/?limit=50", key=tenant.key, workspace=tenant.id
    )
    assert status == 200
    actions = [r["action"] for r in log["items"]]
    assert actions[:3] == ["member.delete", "member.update", "member.create"]
    assert "workspace.create" in actions
    row = log["items"][0]
    assert row["actor"] == tenant.key_id and row["object_id"] == m["id"]
    assert set(row) >= {
        "id",
        "actor",
        "action",
        "object_type",
        "object_id",
        "created_at",
        "details",
    }
