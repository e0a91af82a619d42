"""Bad input: a 4xx in the error format, and nothing changed in the database."""

from __future__ import annotations

import io

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.conftest import ADMIN_TOKEN, Gateway, Tenant


async def _counts(pool: AsyncConnectionPool) -> tuple[int, ...]:
    async with pool.connection() as conn:
        out = []
        for t in ("workspaces", "channels", "api_keys", "memberships"):
            cur = await conn.execute(f"SELECT count(*) AS n FROM {t}")
            out.append((await cur.fetchone())["n"])
        return tuple(out)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/v1/channels/", b"{not json", 400, "invalid_json"),
        ("/api/v1/channels/", b"[1, 2]", 422, "validation_error"),
        ("/api/v1/channels/", b'{"name": "x"}', 422, "validation_error"),
        ("/api/v1/channels/", b'{"name": 5, "provider": "sandbox"}', 422, "validation_error"),
        ("/api/v1/channels/", b'{"name": "x", "provider": "telegram"}', 422, "validation_error"),
        (
            "/api/v1/channels/",
            b'{"name": "x", "provider": "sandbox", "extra": 1}',
            422,
            "validation_error",
        ),
        (
            "/api/v1/channels/",
            b'{"name": "x", "provider": "whatsapp_cloud", "config": {"phone_number_id": "1"}}',
            422,
            "validation_error",
        ),
        (
            "/api/v1/channels/",
            b'{"name": "x", "provider": "sandbox", "agent_id": "not-a-uuid"}',
            422,
            "validation_error",
        ),
        ("/api/v1/auth/keys", b'{"name": "k", "scopes": ["root"]}', 422, "validation_error"),
        ("/api/v1/auth/keys", b'{"name": "k", "scopes": []}', 422, "validation_error"),
        (
            "/api/v1/tenants/members",
            b'{"email": "not-an-email", "role": "admin"}',
            422,
            "validation_error",
        ),
        (
            "/api/v1/tenants/members",
            b'{"email": "a@b.com", "role": "god"}',
            422,
            "validation_error",
        ),
        # What PostgreSQL cannot store is refused before anything reads it.
        (
            "/api/v1/channels/",
            rb'{"name": "a\u0000b", "provider": "sandbox"}',
            400,
            "unsupported_character",
        ),
        (
            "/api/v1/channels/",
            rb'{"name": "a\ud800", "provider": "sandbox"}',
            400,
            "unsupported_character",
        ),
        (
            "/api/v1/auth/keys",
            rb'{"name": "k", "scopes": ["read"], "\udc00": 1}',
            400,
            "unsupported_character",
        ),
        (
            "/api/v1/agents/",
            rb'{"name": "Bot", "description": "x\u0000"}',
            400,
            "unsupported_character",
        ),
        ("/api/v1/agents/", b'{"name": "Bot", "x": NaN}', 400, "invalid_json"),
        (  # a human's reply: refused before the conversation is even looked up
            "/api/v1/conversations/00000000-0000-4000-8000-000000000000/messages",
            rb'{"text": "oi\u0000"}',
            400,
            "unsupported_character",
        ),
        ("/api/v1/agents/", b'{"name": "Bot\xed\xa0\x80"}', 400, "invalid_json"),
        ("/api/v1/agents/", b"[" * 100_000 + b"]" * 100_000, 400, "json_too_deep"),
    ],
)
async def test_bad_bodies(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    path: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    before = await _counts(pool)
    got, answer = await gateway.call(
        "POST",
        path,
        key=tenant.key,
        workspace=tenant.id,
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert got == status, answer
    assert answer["error"]["code"] == code and answer["error"]["message"]
    assert await _counts(pool) == before


async def test_oversized_body(gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool) -> None:
    before = await _counts(pool)
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'", "provider": "sandbox"}'
    status, answer = await gateway.call(
        "POST", "/api/v1/channels/", key=tenant.key, workspace=tenant.id, data=io.BytesIO(big)
    )
    assert status == 413 and answer["error"]["code"] == "payload_too_large"
    assert await _counts(pool) == before


async def test_ids_that_are_not_uuids(gateway: Gateway, tenant: Tenant) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        status, answer = await gateway.call(
            method, "/api/v1/channels/12345", key=tenant.key, workspace=tenant.id, json={}
        )
        assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = await gateway.call(
        "GET", "/api/v1/tenants/workspace", key=tenant.key, workspace="not-a-uuid"
    )
    assert status == 400 and answer["error"]["code"] == "invalid_workspace_header"
    status, answer = await gateway.call("GET", "/api/v1/tenants/workspace", key=tenant.key)
    assert status == 400 and answer["error"]["code"] == "workspace_header_required"
    status, answer = await gateway.call(
        "PATCH", "/api/v1/tenants/workspaces/xyz", key=ADMIN_TOKEN, json={"name": "n"}
    )
    assert status == 404


async def test_bad_query_and_unknown_routes(gateway: Gateway, tenant: Tenant) -> None:
    status, answer = await gateway.call(
        "GET", "/api/v1/channels/?limit=0", key=tenant.key, workspace=tenant.id
    )
    assert status == 400 and answer["error"]["code"] == "invalid_parameter"
    status, answer = await gateway.call("GET", "/api/v1/nope", key=tenant.key, workspace=tenant.id)
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = await gateway.call(
        "PUT", "/api/v1/channels/", key=tenant.key, workspace=tenant.id
    )
    assert status == 405 and answer["error"]["code"] == "method_not_allowed"


async def test_a_value_postgresql_refuses_is_a_400_not_a_500(
    gateway: Gateway, tenant: Tenant
) -> None:
    # A NUL in a query parameter reaches a statement: the safety net answers 400.
    status, answer = await gateway.call(
        "GET", "/api/v1/audit/?action=a%00b", key=tenant.key, workspace=tenant.id
    )
    assert status == 400 and answer["error"]["code"] == "invalid_data", answer
