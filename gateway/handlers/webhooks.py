"""Webhooks: verify, make durable on ``webhooks.raw``, then acknowledge.

Every provider route follows the same path: body within the limit → channel
known (404) → signature or token (401, audited) → channel and workspace active
(403) → JSON every stage can store (400: no NUL, no lone surrogate, not too deep;
checked after the signature, on the bytes as received, never altered) → item keys
→ Redis fast path (a repeat answers ``idempotent: true`` and produces nothing) →
produce with ``acks=all`` and wait (503 + Retry-After when the broker does not ack
in time) → mark the keys → 200. Nothing is answered 200 before the broker holds
the raw body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from typing import Any
from uuid import UUID, uuid4

from aiohttp import web

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers import get_provider
from agents_pipeline.providers.items import KeyedItem, keyed_items
from agents_pipeline.providers.redaction import redact_webhook
from gateway.bodies import parse_json, path_uuid, read_raw, validate
from gateway.channel_cache import ChannelInfo
from gateway.errors import ApiError
from gateway.producer import BrokerUnavailable
from gateway.responses import ok
from gateway.schemas import InboxWebhook, SandboxWebhook
from gateway.services import Services, caller, services
from storage import audit
from streams.contracts import ProviderName, RawHeaders, utcnow
from streams.topics import WEBHOOKS_RAW

log = logging.getLogger(__name__)

_AUDIT_EVERY = 10.0  # seconds: at most one signature-failure audit row per channel per window
_last_audit: dict[UUID, float] = {}
_audit_tasks: set[asyncio.Task] = set()


async def _channel(svc: Services, request: web.Request) -> ChannelInfo:
    channel_id = path_uuid(request, "channel_id", "channel")
    info = await svc.channels.get(channel_id)
    if info is None:
        raise ApiError(404, "not_found", "channel not found")
    return info


def _check_active(info: ChannelInfo) -> None:
    if not info.workspace_active:
        raise ApiError(403, "workspace_inactive", "this workspace is deactivated")
    if not info.is_active:
        raise ApiError(403, "channel_inactive", "this channel is deactivated")


async def _write_auth_failure(svc: Services, info: ChannelInfo, reason: str) -> None:
    try:
        async with svc.pool.connection() as conn:
            await audit.write_audit(
                conn,
                workspace_id=info.workspace_id,
                actor=f"provider:{info.provider.value}",
                action="webhook.auth_failed",
                object_type="channel",
                object_id=info.id,
                details={"reason": reason},
            )
    except Exception:
        log.exception("could not audit a webhook auth failure")


def _auth_failed(svc: Services, info: ChannelInfo, reason: str) -> ApiError:
    """Count, audit (rate-limited per channel, so a flood cannot flood the log) and 401."""
    svc.metrics.signature_failures.labels(info.provider.value).inc()
    now = time.monotonic()
    if now - _last_audit.get(info.id, -_AUDIT_EVERY) >= _AUDIT_EVERY:
        _last_audit[info.id] = now
        task = asyncio.get_running_loop().create_task(_write_auth_failure(svc, info, reason))
        _audit_tasks.add(task)
        task.add_done_callback(_audit_tasks.discard)
    return ApiError(401, "invalid_signature" if "signature" in reason else "invalid_token", reason)


async def _accept(
    svc: Services,
    info: ChannelInfo,
    raw: bytes,
    items: list[KeyedItem],
    *,
    envelope: str = "provider",
    client_key: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Fast-path dedupe, durable produce, mark; the answer's body."""
    provider = info.provider.value
    redis_keys = svc.idempotency.full_keys(info.workspace_str, [it.key for it in items])
    if redis_keys and await svc.idempotency.seen(redis_keys):
        svc.metrics.idempotent_hits.labels(provider).inc()
        return {"ok": True, "idempotent": True}
    trace_id = f"{random.getrandbits(128):032x}"  # an identifier, not a secret
    headers = RawHeaders.encode(
        provider=provider,
        channel_id=info.id_str,
        workspace_id=info.workspace_str,
        received_at=utcnow(),
        trace_id=trace_id,
        idempotency_key=client_key or f"sha256:{hashlib.sha256(raw).hexdigest()}",
        envelope=envelope,
        message_id=message_id,
    )
    try:
        took = await svc.producer.send(
            WEBHOOKS_RAW, key=info.id_str.encode(), value=raw, headers=headers
        )
    except BrokerUnavailable as exc:
        svc.metrics.broker_unavailable.inc()
        retry = str(svc.settings.retry_after_seconds)
        raise ApiError(
            503,
            "broker_unavailable",
            "the webhook could not be made durable; retry",
            headers={"Retry-After": retry},
        ) from exc
    svc.metrics.produce_latency.observe(took)
    svc.metrics.webhooks_accepted.labels(provider).inc()
    svc.idempotency.mark(redis_keys)
    return {"ok": True, "idempotent": False, "trace_id": trace_id, "items": len(items)}


def accepted(answer: dict[str, Any]) -> web.Response:
    """The webhook's answer, its JSON written directly: the hottest response of all."""
    if answer["idempotent"]:
        body = b'{"ok":true,"idempotent":true}'
    else:  # a hex trace id and a count: nothing to escape
        body = b'{"ok":true,"idempotent":false,"trace_id":"%s","items":%d}' % (
            answer["trace_id"].encode(),
            answer["items"],
        )
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _provider_items(info: ChannelInfo, body: Any) -> list[KeyedItem]:
    """Items of a provider-sent body; an unreadable shape is still accepted (and dead-lettered
    by the stream), since the provider cannot fix it and would retry for days."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        return keyed_items(get_provider(info.provider), body, channel_id=str(info.id))
    except UnsupportedPayload:
        return []


# --- WhatsApp Cloud API -------------------------------------------------------------------


async def whatsapp_verify(request: web.Request) -> web.Response:
    """Meta's subscription handshake: echo ``hub.challenge`` when the verify token matches."""
    svc = services(request)
    info = await _channel(svc, request)
    if info.provider is not ProviderName.WHATSAPP_CLOUD:
        raise ApiError(404, "not_found", "channel not found")
    q = request.query
    expected = str(info.config.get("verify_token", ""))
    given = q.get("hub.verify_token", "")
    if (
        q.get("hub.mode") != "subscribe"
        or not expected
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        svc.metrics.signature_failures.labels(info.provider.value).inc()
        raise ApiError(403, "verification_failed", "verify token does not match")
    return web.Response(text=q.get("hub.challenge", ""), content_type="text/plain")


def valid_meta_signature(raw: bytes, header: str | None, app_secret: str) -> bool:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>``, in constant
    time, over the bytes received (never re-serialised JSON)."""
    if not header or not header.startswith("sha256=") or not app_secret:
        return False
    expected = hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[7:].strip().lower().encode(), expected.encode())


async def whatsapp_webhook(request: web.Request) -> web.Response:
    """A signed WhatsApp Cloud API webhook."""
    svc = services(request)
    raw = await read_raw(request, svc.settings.max_body_bytes)
    info = await _channel(svc, request)
    if info.provider is not ProviderName.WHATSAPP_CLOUD:
        raise ApiError(404, "not_found", "channel not found")
    header = request.headers.get("X-Hub-Signature-256")
    if not valid_meta_signature(raw, header, str(info.config.get("app_secret", ""))):
        raise _auth_failed(svc, info, "missing signature" if not header else "invalid signature")
    _check_active(info)
    body = parse_json(raw)
    raw = redact_webhook(info.provider, raw, body)  # verified above on the bytes received
    items = _provider_items(info, body)
    return accepted(await _accept(svc, info, raw, items))


# --- Evolution API ------------------------------------------------------------------------


async def evolution_webhook(request: web.Request) -> web.Response:
    """An Evolution API webhook, authenticated by the channel's webhook token."""
    svc = services(request)
    raw = await read_raw(request, svc.settings.max_body_bytes)
    info = await _channel(svc, request)
    if info.provider is not ProviderName.EVOLUTION:
        raise ApiError(404, "not_found", "channel not found")
    given = request.query.get("token")
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    expected = str(info.config.get("webhook_token", ""))
    if not given or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise _auth_failed(svc, info, "missing token" if not given else "invalid token")
    _check_active(info)
    body = parse_json(raw)
    raw = redact_webhook(info.provider, raw, body)  # Evolution's body carries its apikey
    items = _provider_items(info, body)
    return accepted(await _accept(svc, info, raw, items))


# --- API-key routes: sandbox and the generic inbox ----------------------------------------


async def _own_channel(svc: Services, request: web.Request, channel_id: UUID) -> ChannelInfo:
    info = await svc.channels.get(channel_id)
    if info is None or info.workspace_id != caller(request).workspace_id:
        raise ApiError(404, "not_found", "channel not found")
    _check_active(info)
    return info


async def sandbox_webhook(request: web.Request) -> web.Response:
    """A message from a test contact to a sandbox channel."""
    svc = services(request)
    raw = await read_raw(request, svc.settings.max_body_bytes)
    info = await _own_channel(svc, request, path_uuid(request, "channel_id", "channel"))
    if info.provider is not ProviderName.SANDBOX:
        raise ApiError(422, "wrong_provider", "this channel is not a sandbox channel")
    body = validate(SandboxWebhook, parse_json(raw))
    message_id = body.message_id or f"sbx-{uuid4()}"
    try:
        items = keyed_items(
            get_provider(info.provider),
            body.model_dump(by_alias=True),
            channel_id=str(info.id),
            message_id=message_id,
        )
    except UnsupportedPayload as exc:
        raise ApiError(422, "unsupported_payload", str(exc)) from None
    answer = await _accept(svc, info, raw, items, message_id=message_id)
    answer["message_id"] = message_id
    return ok(answer)


async def inbox_webhook(request: web.Request) -> web.Response:
    """A provider payload relayed by an integrator with an API key."""
    svc = services(request)
    raw = await read_raw(request, svc.settings.max_body_bytes)
    data = parse_json(raw)
    body = validate(InboxWebhook, data)
    info = await _own_channel(svc, request, body.channel_id)
    if body.provider is not None and body.provider is not info.provider:
        raise ApiError(
            422,
            "wrong_provider",
            f"channel's provider is {info.provider.value}, not {body.provider.value}",
        )
    message_id = None
    if info.provider is ProviderName.SANDBOX:
        message_id = body.payload.get("message_id") or f"sbx-{uuid4()}"
    raw = redact_webhook(info.provider, raw, data, envelope="inbox")  # items from the result
    try:
        items = keyed_items(
            get_provider(info.provider),
            data["payload"],
            channel_id=str(info.id),
            client_key=body.idempotency_key,
            message_id=message_id,
        )
    except UnsupportedPayload as exc:
        raise ApiError(422, "unsupported_payload", str(exc)) from None
    answer = await _accept(
        svc,
        info,
        raw,
        items,
        envelope="inbox",
        client_key=body.idempotency_key,
        message_id=message_id,
    )
    return ok(answer)
