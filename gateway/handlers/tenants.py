"""Workspaces (platform admin) and members (workspace keys): /api/v1/tenants/."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.auth import PLATFORM_ADMIN
from gateway.bodies import pagination, path_uuid, read_model
from gateway.errors import ApiError, not_found
from gateway.responses import listing, no_content, ok
from gateway.schemas import MemberCreate, MemberPatch, WorkspaceCreate, WorkspacePatch
from gateway.services import caller, services
from storage import api_keys, audit, members, workspaces


def workspace_view(row: dict[str, Any]) -> dict[str, Any]:
    """A workspace as the API shows it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "plan": row["plan"],
        "is_active": row["is_active"],
        "fallback_text": row["fallback_text"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def member_view(row: dict[str, Any]) -> dict[str, Any]:
    """A member as the API shows it."""
    return {
        "id": row["id"],
        "email": row["email"],
        "role": row["role"],
        "created_at": row["created_at"],
    }


async def create_workspace(request: web.Request) -> web.Response:
    """Create a workspace and its first admin key (shown once)."""
    svc = services(request)
    body = await read_model(request, WorkspaceCreate)
    async with svc.pool.connection() as conn, conn.transaction():
        if not await workspaces.plan_exists(conn, code=body.plan):
            raise ApiError(422, "unknown_plan", f"plan {body.plan!r} does not exist")
        ws = await workspaces.create_workspace(conn, name=body.name, plan=body.plan)
        key, secret = await api_keys.create_key(
            conn,
            workspace_id=ws["id"],
            name="default admin key",
            scopes=["admin"],
            expires_at=None,
        )
        await audit.write_audit(
            conn,
            workspace_id=ws["id"],
            actor=PLATFORM_ADMIN,
            action="workspace.create",
            object_type="workspace",
            object_id=ws["id"],
            details={"name": body.name},
        )
        await audit.write_audit(
            conn,
            workspace_id=ws["id"],
            actor=PLATFORM_ADMIN,
            action="api_key.create",
            object_type="api_key",
            object_id=key["id"],
            details={"scopes": ["admin"]},
        )
    out = workspace_view(ws)
    out["api_key"] = {
        "id": key["id"],
        "key": secret,
        "prefix": key["prefix"],
        "scopes": key["scopes"],
    }
    return ok(out, 201)


async def list_workspaces(request: web.Request) -> web.Response:
    """Every workspace (platform admin)."""
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        rows, nxt = await workspaces.list_workspaces(conn, limit=limit, cursor=cursor)
    return listing([workspace_view(r) for r in rows], nxt)


async def patch_workspace(request: web.Request) -> web.Response:
    """Rename, (de)activate or change the plan of a workspace (platform admin)."""
    svc = services(request)
    workspace_id = path_uuid(request, "id", "workspace")
    body = await read_model(request, WorkspacePatch)
    changes = body.model_dump(exclude_unset=True)
    if any(changes.get(k, True) is None for k in ("name", "is_active", "plan")):
        raise ApiError(422, "validation_error", "name, is_active and plan cannot be null")
    async with svc.pool.connection() as conn, conn.transaction():
        if "plan" in changes and not await workspaces.plan_exists(conn, code=changes["plan"]):
            raise ApiError(422, "unknown_plan", f"plan {changes['plan']!r} does not exist")
        row = await workspaces.update_workspace(conn, workspace_id=workspace_id, changes=changes)
        if row is None:
            raise not_found("workspace")
        await audit.write_audit(
            conn,
            workspace_id=workspace_id,
            actor=PLATFORM_ADMIN,
            action="workspace.update",
            object_type="workspace",
            object_id=workspace_id,
            details=changes,
        )
    svc.keys.clear()
    svc.channels.clear()
    await svc.auth_epoch.bump()  # every other process reloads keys and channels now
    return ok(workspace_view(row))


async def get_own_workspace(request: web.Request) -> web.Response:
    """The caller's workspace."""
    async with services(request).pool.connection() as conn:
        row = await workspaces.get_workspace(conn, workspace_id=caller(request).workspace_id)
    if row is None:
        raise not_found("workspace")
    return ok(workspace_view(row))


async def add_member(request: web.Request) -> web.Response:
    """Add a member with a role."""
    who = caller(request)
    body = await read_model(request, MemberCreate)
    async with services(request).pool.connection() as conn, conn.transaction():
        row = await members.add_member(
            conn, workspace_id=who.workspace_id, email=str(body.email), role=body.role
        )
        if row is None:
            raise ApiError(409, "member_exists", "this email is already a member")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="member.create",
            object_type="member",
            object_id=row["id"],
            details={"role": body.role},
        )
    return ok(member_view(row), 201)


async def list_members(request: web.Request) -> web.Response:
    """The workspace's members."""
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        rows, nxt = await members.list_members(
            conn, workspace_id=caller(request).workspace_id, limit=limit, cursor=cursor
        )
    return listing([member_view(r) for r in rows], nxt)


async def patch_member(request: web.Request) -> web.Response:
    """Change a member's role."""
    who = caller(request)
    member_id = path_uuid(request, "id", "member")
    body = await read_model(request, MemberPatch)
    async with services(request).pool.connection() as conn, conn.transaction():
        row = await members.update_member_role(
            conn, workspace_id=who.workspace_id, member_id=member_id, role=body.role
        )
        if row is None:
            raise not_found("member")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="member.update",
            object_type="member",
            object_id=member_id,
            details={"role": body.role},
        )
    return ok(member_view(row))


async def delete_member(request: web.Request) -> web.Response:
    """Remove a member."""
    who = caller(request)
    member_id = path_uuid(request, "id", "member")
    async with services(request).pool.connection() as conn, conn.transaction():
        if not await members.delete_member(
            conn, workspace_id=who.workspace_id, member_id=member_id
        ):
            raise not_found("member")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="member.delete",
            object_type="member",
            object_id=member_id,
        )
    return no_content()
