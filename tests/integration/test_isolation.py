"""Tenant isolation: a key of workspace A never reads, lists, changes or deletes B's objects."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from tests.conftest import Gateway, make_tenant

SANDBOX = {"name": "b-sandbox", "provider": "sandbox", "config": {}}


async def test_key_of_a_cannot_touch_b(gateway: Gateway, pool: AsyncConnectionPool) -> None:
    a = await make_tenant(gateway, "A")
    b = await make_tenant(gateway, "B")
    _, b_channel = await gateway.call(
        "POST", "/api/v1/channels/", key=b.key, workspace=b.id, json=SANDBOX
    )
    _, b_member = await gateway.call(
        "POST",
        "/api/v1/tenants/members",
        key=b.key,
        workspace=b.id,
        json={"email": "b@b.com", "role": "member"},
    )
    _, b_key = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=b.key,
        workspace=b.id,
        json={"name": "b2", "scopes": ["read"]},
    )

    # A's key with B's workspace header: 403 on every workspace route.
    for method, path in [
        ("GET", "/api/v1/tenants/workspace"),
        ("GET", "/api/v1/channels/"),
        ("GET", "/api/v1/auth/keys"),
        ("GET", "/api/v1/tenants/members"),
        ("GET", "/api/v1/audit/"),
        ("GET", f"/api/v1/channels/{b_channel['id']}"),
        ("DELETE", f"/api/v1/channels/{b_channel['id']}"),
    ]:
        status, body = await gateway.call(method, path, key=a.key, workspace=b.id)
        assert status == 403, (method, path, body)

    # A's key in A's workspace, with B's object ids: 404, and nothing changes.
    for method, path, json in [
        ("GET", f"/api/v1/channels/{b_channel['id']}", None),
        ("PATCH", f"/api/v1/channels/{b_channel['id']}", {"name": "pwned"}),
        ("DELETE", f"/api/v1/channels/{b_channel['id']}", None),
        ("PATCH", f"/api/v1/tenants/members/{b_member['id']}", {"role": "owner"}),
        ("DELETE", f"/api/v1/tenants/members/{b_member['id']}", None),
        ("DELETE", f"/api/v1/auth/keys/{b_key['id']}", None),
    ]:
        status, body = await gateway.call(method, path, key=a.key, workspace=a.id, json=json)
        assert status == 404, (method, path, body)
        assert body["error"]["code"] == "not_found"

    # A's lists never show B's objects.
    for path, b_id in [
        ("/api/v1/channels/", b_channel["id"]),
        ("/api/v1/tenants/members", b_member["id"]),
        ("/api/v1/auth/keys", b_key["id"]),
    ]:
        status, body = await gateway.call("GET", path, key=a.key, workspace=a.id)
        assert status == 200 and b_id not in [x["id"] for x in body["items"]]
    _, audit = await gateway.call("GET", "/api/v1/audit/?limit=200", key=a.key, workspace=a.id)
    assert all(r["object_id"] != b_channel["id"] for r in audit["items"])

    # Sandbox webhook to B's channel with A's key: 404.
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{b_channel['id']}",
        key=a.key,
        workspace=a.id,
        json={"from": "x", "text": "oi"},
    )
    assert status == 404
    status, _ = await gateway.call(
        "POST",
        "/api/v1/webhooks/inbox/",
        key=a.key,
        workspace=a.id,
        json={"channel_id": b_channel["id"], "payload": {}},
    )
    assert status == 404

    # B's objects are intact.
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT name FROM channels WHERE id = %s", (b_channel["id"],))
        assert (await cur.fetchone())["name"] == "b-sandbox"
        cur = await conn.execute("SELECT role FROM memberships WHERE id = %s", (b_member["id"],))
        assert (await cur.fetchone())["role"] == "member"
        cur = await conn.execute("SELECT revoked_at FROM api_keys WHERE id = %s", (b_key["id"],))
        assert (await cur.fetchone())["revoked_at"] is None
