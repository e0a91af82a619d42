"""Agents, their versions and runs: /api/v1/agents/. A published version never changes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from gateway.bodies import pagination, path_uuid, read_model
from gateway.errors import ApiError, not_found
from gateway.responses import listing, no_content, ok
from gateway.schemas import AgentCreate, AgentPatch, VersionCreate, VersionPatch
from gateway.services import caller, services
from storage import agents, audit, conversation_views, runs
from storage.db import Conn

# Columns that may not be null once set: a null in a PATCH is refused, not stored.
_NOT_NULL_VERSION_FIELDS = (
    "system_prompt",
    "temperature",
    "max_tokens",
    "history_tokens",
    "knowledge_base_ids",
)


def agent_view(row: dict[str, Any]) -> dict[str, Any]:
    """An agent as the API shows it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "published_version_id": row["published_version_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def version_view(row: dict[str, Any]) -> dict[str, Any]:
    """An agent version as the API shows it."""
    return {
        "id": row["id"],
        "agent_id": row["agent_id"],
        "number": row["number"],
        "status": row["status"],
        "system_prompt": row["system_prompt"],
        "model": row["model"],
        "temperature": row["temperature"],
        "max_tokens": row["max_tokens"],
        "knowledge_base_ids": row["knowledge_base_ids"],
        "history_tokens": row["history_tokens"],
        "fallback_text": row["fallback_text"],
        "published_at": row["published_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def run_view(row: dict[str, Any]) -> dict[str, Any]:
    """An agent run as the API shows it (the reply text stays on the message)."""
    return {
        "id": row["id"],
        "agent_id": row["agent_id"],
        "version_id": row["version_id"],
        "conversation_id": row["conversation_id"],
        "message_id": row["message_id"],
        "model": row["model"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "latency_ms": row["latency_ms"],
        "cost_usd": row["cost_usd"],
        "sources": row["sources"],
        "outcome": row["outcome"],
        "error": row["error"],
        "retrieval_error": row["retrieval_error"],
        "trace_id": row["trace_id"],
        "created_at": row["created_at"],
    }


async def _agent_or_404(conn: Conn, workspace_id: UUID, agent_id: UUID) -> dict[str, Any]:
    """The agent, or a 404 (another workspace's agent is one too)."""
    row = await agents.get_agent(conn, workspace_id=workspace_id, agent_id=agent_id)
    if row is None:
        raise not_found("agent")
    return row


async def _check_knowledge_bases(conn: Conn, workspace_id: UUID, ids: list[UUID]) -> None:
    """422 unless every id is a knowledge base of this workspace."""
    missing = await conversation_views.missing_knowledge_bases(
        conn, workspace_id=workspace_id, ids=ids
    )
    if missing:
        raise ApiError(
            422,
            "unknown_knowledge_base",
            "knowledge_base_ids names knowledge bases that are not of this workspace",
            {"knowledge_base_ids": [str(i) for i in missing]},
        )


def _dedupe(ids: list[UUID]) -> list[UUID]:
    """The ids in their order, each once (a base searched twice is no better)."""
    return list(dict.fromkeys(ids))


async def create_agent(request: web.Request) -> web.Response:
    """Create an agent (it answers nothing until a version is published)."""
    who = caller(request)
    body = await read_model(request, AgentCreate)
    async with services(request).pool.connection() as conn, conn.transaction():
        row = await agents.create_agent(
            conn, workspace_id=who.workspace_id, name=body.name, description=body.description
        )
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="agent.create",
            object_type="agent",
            object_id=row["id"],
            details={"name": body.name},
        )
    return ok(agent_view(row), 201)


async def list_agents(request: web.Request) -> web.Response:
    """The workspace's agents, oldest first."""
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        rows, nxt = await agents.list_agents(
            conn, workspace_id=caller(request).workspace_id, limit=limit, cursor=cursor
        )
    return listing([agent_view(r) for r in rows], nxt)


async def get_agent(request: web.Request) -> web.Response:
    """One agent."""
    agent_id = path_uuid(request, "id", "agent")
    async with services(request).pool.connection() as conn:
        row = await _agent_or_404(conn, caller(request).workspace_id, agent_id)
    return ok(agent_view(row))


async def patch_agent(request: web.Request) -> web.Response:
    """Rename an agent or change its description."""
    who = caller(request)
    agent_id = path_uuid(request, "id", "agent")
    body = await read_model(request, AgentPatch)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise ApiError(422, "validation_error", "name cannot be null")
    async with services(request).pool.connection() as conn, conn.transaction():
        row = await agents.update_agent(
            conn, workspace_id=who.workspace_id, agent_id=agent_id, changes=changes
        )
        if row is None:
            raise not_found("agent")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="agent.update",
            object_type="agent",
            object_id=agent_id,
            details=changes,
        )
    return ok(agent_view(row))


async def delete_agent(request: web.Request) -> web.Response:
    """Delete an agent with its versions and runs (its channels keep running, agentless)."""
    who = caller(request)
    agent_id = path_uuid(request, "id", "agent")
    async with services(request).pool.connection() as conn, conn.transaction():
        if not await agents.delete_agent(conn, workspace_id=who.workspace_id, agent_id=agent_id):
            raise not_found("agent")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="agent.delete",
            object_type="agent",
            object_id=agent_id,
        )
    return no_content()


async def create_version(request: web.Request) -> web.Response:
    """Add the agent's next version, as a draft."""
    who = caller(request)
    agent_id = path_uuid(request, "id", "agent")
    body = await read_model(request, VersionCreate)
    fields = body.model_dump(exclude_none=True)  # absent or null: the column's default
    fields["knowledge_base_ids"] = _dedupe(body.knowledge_base_ids)
    async with services(request).pool.connection() as conn, conn.transaction():
        await _agent_or_404(conn, who.workspace_id, agent_id)
        await _check_knowledge_bases(conn, who.workspace_id, fields["knowledge_base_ids"])
        row = await agents.create_version(
            conn, workspace_id=who.workspace_id, agent_id=agent_id, fields=fields
        )
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="agent_version.create",
            object_type="agent_version",
            object_id=row["id"],
            details={"agent_id": str(agent_id), "number": row["number"]},
        )
    return ok(version_view(row), 201)


async def list_versions(request: web.Request) -> web.Response:
    """An agent's versions, oldest first."""
    workspace_id = caller(request).workspace_id
    agent_id = path_uuid(request, "id", "agent")
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        await _agent_or_404(conn, workspace_id, agent_id)
        rows, nxt = await agents.list_versions(
            conn, workspace_id=workspace_id, agent_id=agent_id, limit=limit, cursor=cursor
        )
    return listing([version_view(r) for r in rows], nxt)


async def get_version(request: web.Request) -> web.Response:
    """One version of an agent."""
    agent_id = path_uuid(request, "id", "agent")
    version_id = path_uuid(request, "version_id", "version")
    async with services(request).pool.connection() as conn:
        row = await agents.get_version(
            conn,
            workspace_id=caller(request).workspace_id,
            agent_id=agent_id,
            version_id=version_id,
        )
    if row is None:
        raise not_found("version")
    return ok(version_view(row))


async def patch_version(request: web.Request) -> web.Response:
    """Change a draft; a published version is immutable (409 ``version_published``)."""
    who = caller(request)
    agent_id = path_uuid(request, "id", "agent")
    version_id = path_uuid(request, "version_id", "version")
    body = await read_model(request, VersionPatch)
    fields = body.model_dump(exclude_unset=True)
    nulls = sorted(k for k in _NOT_NULL_VERSION_FIELDS if k in fields and fields[k] is None)
    if nulls:
        raise ApiError(422, "validation_error", f"{', '.join(nulls)} cannot be null")
    if "knowledge_base_ids" in fields:
        fields["knowledge_base_ids"] = _dedupe(body.knowledge_base_ids or [])
    async with services(request).pool.connection() as conn, conn.transaction():
        current = await agents.get_version(
            conn, workspace_id=who.workspace_id, agent_id=agent_id, version_id=version_id
        )
        if current is None:
            raise not_found("version")
        if current["status"] == "published":
            raise _published()
        if "knowledge_base_ids" in fields:
            await _check_knowledge_bases(conn, who.workspace_id, fields["knowledge_base_ids"])
        row = await agents.update_draft(
            conn, workspace_id=who.workspace_id, version_id=version_id, fields=fields
        )
        if row is None:  # published by someone else since we read it
            raise _published()
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="agent_version.update",
            object_type="agent_version",
            object_id=version_id,
            details={"agent_id": str(agent_id), "fields": sorted(fields)},
        )
    return ok(version_view(row))


def _published() -> ApiError:
    """The 409 for changing a published version."""
    return ApiError(409, "version_published", "a published version is immutable; add a new one")


async def publish_version(request: web.Request) -> web.Response:
    """Freeze a version and make it the one the agent answers with (idempotent)."""
    who = caller(request)
    agent_id = path_uuid(request, "id", "agent")
    version_id = path_uuid(request, "version_id", "version")
    async with services(request).pool.connection() as conn, conn.transaction():
        agent = await _agent_or_404(conn, who.workspace_id, agent_id)
        current = await agents.get_version(
            conn, workspace_id=who.workspace_id, agent_id=agent_id, version_id=version_id
        )
        if current is None:
            raise not_found("version")
        row = await agents.publish_version(
            conn, workspace_id=who.workspace_id, agent_id=agent_id, version_id=version_id
        )
        if row is None:
            raise not_found("version")
        # A repeat that changes nothing writes no audit row; re-publishing an older version
        # (a rollback) changes the agent, so it does.
        if current["status"] != "published" or agent["published_version_id"] != version_id:
            await audit.write_audit(
                conn,
                workspace_id=who.workspace_id,
                actor=who.actor,
                action="agent_version.publish",
                object_type="agent_version",
                object_id=version_id,
                details={
                    "agent_id": str(agent_id),
                    "number": row["number"],
                    "previous_version_id": (
                        str(agent["published_version_id"])
                        if agent["published_version_id"]
                        else None
                    ),
                },
            )
    return ok(version_view(row))


async def list_runs(request: web.Request) -> web.Response:
    """An agent's runs, newest first: what each answer cost and which sources it used."""
    workspace_id = caller(request).workspace_id
    agent_id = path_uuid(request, "id", "agent")
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        await _agent_or_404(conn, workspace_id, agent_id)
        rows, nxt = await runs.list_runs(
            conn, workspace_id=workspace_id, agent_id=agent_id, limit=limit, cursor=cursor
        )
    return listing([run_view(r) for r in rows], nxt)
