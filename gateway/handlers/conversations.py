"""Conversations and messages: /api/v1/conversations/. A human's reply goes to the send stage.

A reply is stored first (``pending``), then produced to ``messages.send`` once the row is
committed, so the send stage always finds the row it is asked to deliver. When the broker
does not acknowledge, the row is marked ``failed`` (it would otherwise stay pending forever)
and the caller gets 503 with Retry-After: retrying makes a new message, never a duplicate.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from uuid import UUID

from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from gateway.bodies import pagination, path_uuid, query_uuid, read_model
from gateway.errors import ApiError, not_found
from gateway.producer import BrokerUnavailable
from gateway.responses import listing, ok
from gateway.schemas import ConversationPatch, MessageCreate
from gateway.services import caller, services
from storage import audit, conversation_views, conversations, deadletters, messages
from streams.contracts import ProviderName, SendRequest, UsageEvent, utcnow
from streams.topics import MESSAGES_SEND, USAGE_EVENTS

log = logging.getLogger(__name__)

STATUSES = ("open", "closed")
MODES = ("bot", "human")


def conversation_view(row: dict[str, Any]) -> dict[str, Any]:
    """A conversation as the API shows it, with its contact."""
    return {
        "id": row["id"],
        "channel_id": row["channel_id"],
        "contact": {
            "id": row["contact_id"],
            "external_id": row["contact_external_id"],
            "name": row["contact_name"],
            "phone": row["contact_phone"],
        },
        "mode": row["mode"],
        "human_until": row["human_until"],
        "status": row["status"],
        "last_message_at": row["last_message_at"],
        "last_inbound_at": row["last_inbound_at"],
        "needs_attention": row["needs_attention"],
        "attention_reason": row["attention_reason"],
        "attention_at": row["attention_at"],
        "attention_deadletter_id": row["attention_deadletter_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def message_view(row: dict[str, Any]) -> dict[str, Any]:
    """A message as the API shows it (no raw provider payload)."""
    return {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "direction": row["direction"],
        "author": row["author"],
        "type": row["type"],
        "text": row["text"],
        "status": row["status"],
        "error_code": row["error_code"],
        "provider_message_id": row["provider_message_id"],
        "in_reply_to": row["in_reply_to"],
        "sent_at": row["sent_at"],
        "created_at": row["created_at"],
        "trace_id": row["trace_id"],
    }


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    """An optional enumerated query parameter (400 ``invalid_parameter`` when unknown)."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of: {', '.join(allowed)}")
    return value


async def list_conversations(request: web.Request) -> web.Response:
    """The workspace's conversations, newest first, by channel, status and mode."""
    limit, cursor = pagination(request)
    channel_id = query_uuid(request, "channel_id")
    status = _choice(request, "status", STATUSES)
    mode = _choice(request, "mode", MODES)
    attention = _choice(request, "needs_attention", ("true", "false"))
    async with services(request).pool.connection() as conn:
        rows, nxt = await conversation_views.list_conversations(
            conn,
            workspace_id=caller(request).workspace_id,
            limit=limit,
            cursor=cursor,
            channel_id=channel_id,
            status=status,
            mode=mode,
            needs_attention=None if attention is None else attention == "true",
        )
    return listing([conversation_view(r) for r in rows], nxt)


async def get_conversation(request: web.Request) -> web.Response:
    """One conversation."""
    conversation_id = path_uuid(request, "id", "conversation")
    async with services(request).pool.connection() as conn:
        row = await conversation_views.get_conversation(
            conn, workspace_id=caller(request).workspace_id, conversation_id=conversation_id
        )
    if row is None:
        raise not_found("conversation")
    return ok(conversation_view(row))


async def patch_conversation(request: web.Request) -> web.Response:
    """Hand a conversation to a human or back to the bot; close or reopen it; clear its
    ``needs_attention`` flag."""
    who = caller(request)
    conversation_id = path_uuid(request, "id", "conversation")
    body = await read_model(request, ConversationPatch)
    changes = body.model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in changes.items() if v is None)
    if nulls:
        raise ApiError(422, "validation_error", f"{', '.join(nulls)} cannot be null")
    svc = services(request)
    async with svc.pool.connection() as conn, conn.transaction():
        before = await conversation_views.get_conversation(
            conn, workspace_id=who.workspace_id, conversation_id=conversation_id
        )
        try:
            found = await conversation_views.patch_conversation(
                conn,
                workspace_id=who.workspace_id,
                conversation_id=conversation_id,
                changes=changes,
            )
        except conversation_views.OpenConversationExists:
            raise ApiError(
                409,
                "open_conversation_exists",
                "the contact already has an open conversation on this channel",
            ) from None
        if not found:
            raise not_found("conversation")
        if "needs_attention" in changes:
            await deadletters.clear_attention(
                conn, workspace_id=who.workspace_id, conversation_id=conversation_id
            )
        row = await conversation_views.get_conversation(
            conn, workspace_id=who.workspace_id, conversation_id=conversation_id
        )
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="conversation.update",
            object_type="conversation",
            object_id=conversation_id,
            details=changes,
        )
    assert row is not None and before is not None
    if row["status"] != before["status"]:
        await _count_transition(svc, who.workspace_id, row, secrets.token_hex(16))
    return ok(conversation_view(row))  # type: ignore[arg-type]


async def _count_transition(
    svc: Any, workspace_id: UUID, row: dict[str, Any], trace_id: str
) -> None:
    """Tell the stats (``usage.events``) that a conversation closed or reopened.

    The change is committed already; if the broker does not take the event, the
    open-conversations view is off by one until the next change (logged, not failed).
    """
    kind = "conversations_closed" if row["status"] == "closed" else "conversations_opened"
    now = utcnow()
    event = UsageEvent(
        trace_id=trace_id,
        event_key=f"{kind}:{row['id']}:{now.isoformat()}",
        workspace_id=workspace_id,
        kind=kind,
        amount=1,
        day=now.date(),
        occurred_at=now,
        channel_id=row["channel_id"],
    )
    try:
        await svc.producer.send(
            USAGE_EVENTS,
            key=str(workspace_id).encode(),
            value=event.model_dump_json().encode(),
            headers=[],
        )
    except BrokerUnavailable as exc:
        log.warning("conversation %s %s not counted in the stats: %s", row["id"], kind, exc)


async def list_messages(request: web.Request) -> web.Response:
    """A conversation's messages, oldest first."""
    workspace_id = caller(request).workspace_id
    conversation_id = path_uuid(request, "id", "conversation")
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        conv = await conversations.get_conversation(
            conn, workspace_id=workspace_id, conversation_id=conversation_id
        )
        if conv is None:
            raise not_found("conversation")
        rows, nxt = await conversation_views.list_messages(
            conn,
            workspace_id=workspace_id,
            conversation_id=conversation_id,
            limit=limit,
            cursor=cursor,
        )
    return listing([message_view(r) for r in rows], nxt)


async def send_message(request: web.Request) -> web.Response:
    """Store a human's reply and hand it to the send stage (202: delivery is asynchronous)."""
    svc = services(request)
    who = caller(request)
    conversation_id = path_uuid(request, "id", "conversation")
    body = await read_model(request, MessageCreate)
    trace_id = secrets.token_hex(16)
    async with svc.pool.connection() as conn, conn.transaction():
        # Locked, so that a concurrent close cannot slip between the check and the insert.
        conv = await conversation_views.get_conversation(
            conn, workspace_id=who.workspace_id, conversation_id=conversation_id, for_update=True
        )
        if conv is None:
            raise not_found("conversation")
        if conv["status"] != "open":
            raise ApiError(409, "conversation_closed", "this conversation is closed")
        if not conv["channel_active"]:
            raise ApiError(409, "channel_inactive", "the conversation's channel is deactivated")
        row, _ = await messages.insert_human_outbound(
            conn,
            workspace_id=who.workspace_id,
            channel_id=conv["channel_id"],
            conversation_id=conversation_id,
            text=body.text,
            trace_id=trace_id,
        )
        await conversations.touch(
            conn,
            workspace_id=who.workspace_id,
            conversation_id=conversation_id,
            at=row["created_at"],
            inbound=False,
        )
        # A person answered: the conversation no longer waits for one.
        await deadletters.clear_attention(
            conn, workspace_id=who.workspace_id, conversation_id=conversation_id
        )
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="message.create",
            object_type="message",
            object_id=row["id"],
            details={"conversation_id": str(conversation_id), "author": "human"},
        )
    request_ = SendRequest(
        trace_id=trace_id,
        workspace_id=who.workspace_id,
        channel_id=conv["channel_id"],
        provider=ProviderName(conv["channel_provider"]),
        conversation_id=conversation_id,
        contact_external_id=conv["contact_external_id"],
        contact_phone=conv["contact_phone"],
        outbound_id=row["id"],
        author="human",
        text=body.text,
        received_at=None,
    )
    try:
        took = await svc.producer.send(
            MESSAGES_SEND,
            key=request_.key.encode(),
            value=request_.model_dump_json().encode(),
            headers=[],
        )
    except BrokerUnavailable as exc:
        svc.metrics.broker_unavailable.inc()
        await _mark_unsent(svc.pool, who.workspace_id, row["id"], str(exc))
        raise ApiError(
            503,
            "broker_unavailable",
            "the reply could not be handed to the send stage; retry",
            {"message_id": str(row["id"])},
            headers={"Retry-After": str(svc.settings.retry_after_seconds)},
        ) from exc
    svc.metrics.produce_latency.observe(took)
    return ok(message_view(row), 202)


async def _mark_unsent(
    pool: AsyncConnectionPool, workspace_id: UUID, message_id: UUID, reason: str
) -> None:
    """Fail the stored reply, so that it is not shown pending forever (best effort)."""
    try:
        async with pool.connection() as conn, conn.transaction():
            await conversation_views.fail_unsent(
                conn,
                workspace_id=workspace_id,
                message_id=message_id,
                error_code="broker_unavailable",
                error_message=reason,
            )
    except Exception:
        log.exception("could not mark message %s failed after a broker failure", message_id)
