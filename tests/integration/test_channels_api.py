"""Channels: validated configs, credentials sealed at rest and masked in every answer."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from tests.conftest import Gateway, Tenant

CLOUD = {
    "phone_number_id": "106540352242922",
    "access_token": "EAAG-super-secret-access-token",
    "app_secret": "app-secret-0123456789",
    "verify_token": "verify-me-please",
    "waba_id": "102290129340398",
}
EVOLUTION = {
    "base_url": "http://127.0.0.1:9/evo",
    "instance": "loja1",
    "api_key": "evo-api-key-secret",
    "webhook_token": "evo-webhook-token-secret",
}


async def test_create_masks_and_seals(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    status, ch = await gateway.call(
        "POST",
        "/api/v1/channels/",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "WhatsApp", "provider": "whatsapp_cloud", "config": CLOUD},
    )
    assert status == 201, ch
    assert ch["config"]["phone_number_id"] == CLOUD["phone_number_id"]
    assert ch["config"]["api_version"].startswith("v")
    assert ch["webhook_url"].endswith(f"/api/v1/webhooks/whatsapp/{ch['id']}")
    for secret in ("access_token", "app_secret", "verify_token"):
        assert ch["config"][secret] == "********"
    raw = str(ch)
    for value in CLOUD.values():
        if value not in (CLOUD["phone_number_id"], CLOUD["waba_id"]):
            assert value not in raw
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT config::text AS c, secrets FROM channels WHERE id = %s", (ch["id"],)
        )
        row = await cur.fetchone()
    for secret in ("access_token", "app_secret", "verify_token"):
        assert CLOUD[secret] not in row["c"]
        assert CLOUD[secret].encode() not in bytes(row["secrets"])

    for path in (f"/api/v1/channels/{ch['id']}", "/api/v1/channels/"):
        _, got = await gateway.call("GET", path, key=tenant.key, workspace=tenant.id)
        for value in ("EAAG-super-secret-access-token", "app-secret-0123456789"):
            assert value not in str(got)


async def test_patch_merges_config_and_keeps_secrets(gateway: Gateway, tenant: Tenant) -> None:
    _, ch = await gateway.call(
        "POST",
        "/api/v1/channels/",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "Evo", "provider": "evolution", "config": EVOLUTION},
    )
    status, patched = await gateway.call(
        "PATCH",
        f"/api/v1/channels/{ch['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"config": {"instance": "loja2"}, "is_active": False},
    )
    assert status == 200, patched
    assert patched["config"]["instance"] == "loja2" and patched["is_active"] is False
    assert patched["config"]["api_key"] == "********"
    status, body = await gateway.call(
        "PATCH",
        f"/api/v1/channels/{ch['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"config": {"base_url": "not a url"}},
    )
    assert status == 422 and body["error"]["details"]["errors"][0]["field"].startswith("config")
    status, _ = await gateway.call(
        "DELETE", f"/api/v1/channels/{ch['id']}", key=tenant.key, workspace=tenant.id
    )
    assert status == 204
    status, _ = await gateway.call(
        "GET", f"/api/v1/channels/{ch['id']}", key=tenant.key, workspace=tenant.id
    )
    assert status == 404


async def test_unknown_agent_refused(gateway: Gateway, tenant: Tenant) -> None:
    status, body = await gateway.call(
        "POST",
        "/api/v1/channels/",
        key=tenant.key,
        workspace=tenant.id,
        json={
            "name": "s",
            "provider": "sandbox",
            "config": {},
            "agent_id": "00000000-0000-0000-0000-000000000001",
        },
    )
    assert status == 422 and body["error"]["code"] == "unknown_agent"
