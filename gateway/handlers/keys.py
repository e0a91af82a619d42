"""API keys: /api/v1/auth/keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.bodies import pagination, path_uuid, read_model
from gateway.errors import ApiError, not_found
from gateway.responses import listing, no_content, ok
from gateway.schemas import KeyCreate
from gateway.services import caller, services
from storage import api_keys, audit


def key_view(row: dict[str, Any]) -> dict[str, Any]:
    """A key without its secret."""
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": row["scopes"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
        "created_at": row["created_at"],
    }


async def create_key(request: web.Request) -> web.Response:
    """Create a key; its secret is in this answer only."""
    who = caller(request)
    body = await read_model(request, KeyCreate)
    expires = body.expires_at
    if expires is not None:
        if expires.tzinfo is None:
            raise ApiError(422, "validation_error", "expires_at needs a timezone (use Z)")
        if expires <= datetime.now(UTC):
            raise ApiError(422, "validation_error", "expires_at must be in the future")
    scopes = sorted(set(body.scopes))
    async with services(request).pool.connection() as conn, conn.transaction():
        row, secret = await api_keys.create_key(
            conn,
            workspace_id=who.workspace_id,
            name=body.name,
            scopes=scopes,
            expires_at=expires,
        )
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="api_key.create",
            object_type="api_key",
            object_id=row["id"],
            details={"scopes": scopes},
        )
    out = key_view(row)
    out["key"] = secret
    return ok(out, 201)


async def list_keys(request: web.Request) -> web.Response:
    """The workspace's keys, without secrets."""
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        rows, nxt = await api_keys.list_keys(
            conn, workspace_id=caller(request).workspace_id, limit=limit, cursor=cursor
        )
    return listing([key_view(r) for r in rows], nxt)


async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key: it stops working at once, in every process (the auth epoch)."""
    svc = services(request)
    who = caller(request)
    key_id = path_uuid(request, "id", "api key")
    async with svc.pool.connection() as conn, conn.transaction():
        key_hash = await api_keys.revoke_key(conn, workspace_id=who.workspace_id, key_id=key_id)
        if key_hash is None:
            raise not_found("api key")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="api_key.revoke",
            object_type="api_key",
            object_id=key_id,
        )
    svc.keys.evict(key_hash)
    await svc.auth_epoch.bump()
    return no_content()
