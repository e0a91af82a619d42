"""The audit log: GET /api/v1/audit/."""

from __future__ import annotations

from aiohttp import web

from gateway.bodies import pagination
from gateway.responses import listing
from gateway.services import caller, services
from storage import audit


async def list_audit(request: web.Request) -> web.Response:
    """The workspace's audit rows, newest first (``?action=`` filters)."""
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        rows, nxt = await audit.list_audit(
            conn,
            workspace_id=caller(request).workspace_id,
            limit=limit,
            cursor=cursor,
            action=request.query.get("action") or None,
        )
    return listing(rows, nxt)
