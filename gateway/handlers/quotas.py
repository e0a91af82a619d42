"""Monthly limits of a workspace: /api/v1/tenants/workspaces/{id}/quotas (platform admin).

The stream enforces them (agents_pipeline/quota.py) and reads them through a cache
of a few seconds, so a change reaches the workers within that time.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from gateway.auth import PLATFORM_ADMIN
from gateway.bodies import path_uuid, read_model
from gateway.errors import not_found
from gateway.responses import ok
from gateway.schemas import QuotaOverrides
from gateway.services import services
from storage import audit, quotas, workspaces
from storage.db import Conn


async def _view(conn: Conn, workspace_id: UUID) -> dict[str, Any]:
    limits = await quotas.monthly_limits(conn, workspace_id=workspace_id)
    cur = await conn.execute(
        "SELECT metric, monthly_limit FROM quotas WHERE workspace_id = %s ORDER BY metric",
        (workspace_id,),
    )
    overrides = {r["metric"]: r["monthly_limit"] for r in await cur.fetchall()}
    return {
        "workspace_id": workspace_id,
        "plan": limits["plan"],
        "inbound_messages": limits["inbound_messages"],
        "llm_tokens": limits["llm_tokens"],
        "overrides": overrides,
    }


async def _require_workspace(conn: Conn, workspace_id: UUID) -> None:
    if await workspaces.get_workspace(conn, workspace_id=workspace_id) is None:
        raise not_found("workspace")


async def get_quotas(request: web.Request) -> web.Response:
    """The workspace's effective monthly limits (null: unlimited) and its overrides."""
    workspace_id = path_uuid(request, "id", "workspace")
    async with services(request).pool.connection() as conn:
        await _require_workspace(conn, workspace_id)
        return ok(await _view(conn, workspace_id))


async def put_quotas(request: web.Request) -> web.Response:
    """Override the plan's limits for the metrics given."""
    workspace_id = path_uuid(request, "id", "workspace")
    body = await read_model(request, QuotaOverrides)
    changes = body.model_dump(exclude_unset=True)
    async with services(request).pool.connection() as conn, conn.transaction():
        await _require_workspace(conn, workspace_id)
        for metric, limit in changes.items():
            await quotas.set_override(
                conn, workspace_id=workspace_id, metric=metric, monthly_limit=limit
            )
        await audit.write_audit(
            conn,
            workspace_id=workspace_id,
            actor=PLATFORM_ADMIN,
            action="quota.update",
            object_type="workspace",
            object_id=workspace_id,
            details=changes,
        )
        return ok(await _view(conn, workspace_id))


async def delete_quotas(request: web.Request) -> web.Response:
    """Drop every override: the plan's limits apply again."""
    workspace_id = path_uuid(request, "id", "workspace")
    async with services(request).pool.connection() as conn, conn.transaction():
        await _require_workspace(conn, workspace_id)
        for metric in quotas.METRICS:
            await quotas.clear_override(conn, workspace_id=workspace_id, metric=metric)
        await audit.write_audit(
            conn,
            workspace_id=workspace_id,
            actor=PLATFORM_ADMIN,
            action="quota.reset",
            object_type="workspace",
            object_id=workspace_id,
        )
        return ok(await _view(conn, workspace_id))
