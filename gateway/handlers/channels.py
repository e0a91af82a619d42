"""Channels: /api/v1/channels/. Credentials are sealed at rest and masked in every answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from agents_pipeline.providers.configs import (
    DESTINATION_FIELDS,
    OUTBOUND_SECRETS,
    SECRET_FIELDS,
    config_to_plain,
    parse_config,
)
from gateway.bodies import pagination, path_uuid, read_model, validation_error
from gateway.errors import ApiError, not_found
from gateway.responses import listing, no_content, ok
from gateway.schemas import ChannelCreate, ChannelPatch
from gateway.services import Services, caller, services
from storage import agents, audit, channels
from streams.contracts import ProviderName

MASK = "********"
WEBHOOK_PATHS = {
    ProviderName.WHATSAPP_CLOUD: "whatsapp",
    ProviderName.EVOLUTION: "evolution",
    ProviderName.SANDBOX: "sandbox",
}


def base_url(svc: Services) -> str:
    """Where providers reach this gateway."""
    s = svc.settings
    return (s.public_base_url or f"http://{s.gateway_host}:{s.gateway_port}").rstrip("/")


def channel_view(svc: Services, row: dict[str, Any]) -> dict[str, Any]:
    """A channel as the API shows it: every secret masked."""
    provider = ProviderName(row["provider"])
    config = dict(row["config"])
    for name in SECRET_FIELDS[provider]:
        config[name] = MASK
    return {
        "id": row["id"],
        "name": row["name"],
        "provider": provider.value,
        "config": config,
        "agent_id": row["agent_id"],
        "is_active": row["is_active"],
        "webhook_url": f"{base_url(svc)}/api/v1/webhooks/{WEBHOOK_PATHS[provider]}/{row['id']}",
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def split_config(provider: ProviderName, data: dict[str, Any]) -> tuple[dict, dict]:
    """Validate a config; return (clear part, secret part)."""
    try:
        parsed = parse_config(provider, data)
    except ValidationError as exc:
        err = validation_error(exc)
        for e in err.details["errors"]:  # type: ignore[index]
            e["field"] = f"config.{e['field']}"
        raise err from None
    plain = config_to_plain(parsed)
    secret_names = SECRET_FIELDS[provider]
    secret = {k: v for k, v in plain.items() if k in secret_names}
    clear = {k: v for k, v in plain.items() if k not in secret_names}
    return clear, secret


def require_secrets_for_new_destination(
    provider: ProviderName, stored: dict[str, Any], clear: dict[str, Any], given: dict[str, Any]
) -> None:
    """A new destination (``base_url``) takes the credentials its calls carry, given again.

    Stored secrets follow a PATCH that leaves them out; without this rule an API key
    could point a channel at its own server and receive the channel's token with the
    next send. Values are compared after validation, so a mere respelling of the same
    URL is no change.
    """
    moved = sorted(f for f in DESTINATION_FIELDS[provider] if clear.get(f) != stored.get(f))
    if not moved:
        return
    missing = sorted(f for f in OUTBOUND_SECRETS[provider] if not given.get(f))
    if missing:
        raise ApiError(
            422,
            "secrets_required",
            f"changing {', '.join(moved)} requires the channel's credentials again in the "
            f"same request: {', '.join(missing)}",
            {"fields": [f"config.{f}" for f in missing], "changed": [f"config.{f}" for f in moved]},
        )


async def create_channel(request: web.Request) -> web.Response:
    """Create a channel with a validated config."""
    svc = services(request)
    who = caller(request)
    body = await read_model(request, ChannelCreate)
    clear, secret = split_config(body.provider, body.config)
    async with svc.pool.connection() as conn, conn.transaction():
        if body.agent_id is not None and not await agents.agent_exists(
            conn, workspace_id=who.workspace_id, agent_id=body.agent_id
        ):
            raise ApiError(422, "unknown_agent", "agent_id is not an agent of this workspace")
        row = await channels.create_channel(
            conn,
            workspace_id=who.workspace_id,
            name=body.name,
            provider=body.provider.value,
            config=clear,
            secrets=svc.box.seal(secret) if secret else None,
            agent_id=body.agent_id,
        )
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="channel.create",
            object_type="channel",
            object_id=row["id"],
            details={"provider": body.provider.value},
        )
    return ok(channel_view(svc, row), 201)


async def list_channels(request: web.Request) -> web.Response:
    """The workspace's channels."""
    svc = services(request)
    limit, cursor = pagination(request)
    async with svc.pool.connection() as conn:
        rows, nxt = await channels.list_channels(
            conn, workspace_id=caller(request).workspace_id, limit=limit, cursor=cursor
        )
    return listing([channel_view(svc, r) for r in rows], nxt)


async def get_channel(request: web.Request) -> web.Response:
    """One channel."""
    svc = services(request)
    channel_id = path_uuid(request, "id", "channel")
    async with svc.pool.connection() as conn:
        row = await channels.get_channel(
            conn, workspace_id=caller(request).workspace_id, channel_id=channel_id
        )
    if row is None:
        raise not_found("channel")
    return ok(channel_view(svc, row))


async def patch_channel(request: web.Request) -> web.Response:
    """Change name, config (fields given replace those stored), agent or active flag."""
    svc = services(request)
    who = caller(request)
    channel_id = path_uuid(request, "id", "channel")
    body = await read_model(request, ChannelPatch)
    given = body.model_dump(exclude_unset=True)
    if given.get("name", "") is None or given.get("is_active", False) is None:
        raise ApiError(422, "validation_error", "name and is_active cannot be null")
    async with svc.pool.connection() as conn, conn.transaction():
        row = await channels.get_channel(conn, workspace_id=who.workspace_id, channel_id=channel_id)
        if row is None:
            raise not_found("channel")
        changes: dict[str, Any] = {
            k: given[k] for k in ("name", "is_active", "agent_id") if k in given
        }
        if given.get("agent_id") is not None and not await agents.agent_exists(
            conn, workspace_id=who.workspace_id, agent_id=given["agent_id"]
        ):
            raise ApiError(422, "unknown_agent", "agent_id is not an agent of this workspace")
        if given.get("config") is not None:
            provider = ProviderName(row["provider"])
            merged = {**row["config"], **svc.box.open(row["secrets"]), **given["config"]}
            clear, secret = split_config(provider, merged)
            require_secrets_for_new_destination(provider, row["config"], clear, given["config"])
            changes["config"] = clear
            changes["secrets"] = svc.box.seal(secret) if secret else None
        row = await channels.update_channel(
            conn, workspace_id=who.workspace_id, channel_id=channel_id, changes=changes
        )
        audit_details = {k: v for k, v in given.items() if k != "config"}
        if "config" in given:
            audit_details["config_fields"] = sorted((given["config"] or {}).keys())
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="channel.update",
            object_type="channel",
            object_id=channel_id,
            details={k: str(v) if k == "agent_id" and v else v for k, v in audit_details.items()},
        )
    svc.channels.evict(channel_id)
    await svc.auth_epoch.bump()
    return ok(channel_view(svc, row))  # type: ignore[arg-type]


async def delete_channel(request: web.Request) -> web.Response:
    """Delete a channel."""
    svc = services(request)
    who = caller(request)
    channel_id = path_uuid(request, "id", "channel")
    async with svc.pool.connection() as conn, conn.transaction():
        if not await channels.delete_channel(
            conn, workspace_id=who.workspace_id, channel_id=channel_id
        ):
            raise not_found("channel")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="channel.delete",
            object_type="channel",
            object_id=channel_id,
        )
    svc.channels.evict(channel_id)
    await svc.auth_epoch.bump()
    return no_content()
