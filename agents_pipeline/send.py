"""send: deliver an outbound message through its provider, exactly once per message id.

Before calling the provider the message is *claimed* (``pending → sending``); a
message that already reached ``sent`` (or ``failed``/``blocked``) is never sent
again, whatever replays the request. A worker that dies between the provider's
answer and recording it leaves the message in ``sending``, and a replay sends it
again: that window (one HTTP round trip) is the only at-least-once left.

WhatsApp refuses free text more than 24 hours after the contact's last message:
such a reply is not attempted, it is ``blocked`` and audited. Retriable errors
(429, 5xx, timeouts, Meta's throughput codes) are retried with backoff,
honouring Retry-After; a permanent error marks the message ``failed`` and goes to
``deadletter``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import aiohttp
from psycopg_pool import AsyncConnectionPool

from agents_pipeline.errors import ProviderError
from agents_pipeline.lookups import READ_THROUGH, Lookups
from agents_pipeline.providers import get_provider
from agents_pipeline.providers.base import SendResult
from agents_pipeline.providers.configs import parse_config
from storage import bulk, conversations, messages
from storage.secrets import SecretBox
from streams.contracts import AuditEvent, DeadLetter, ProviderName, SendRequest, SentMessage
from streams.retry import with_retry

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
MAX_RETRY_AFTER = 30.0


@dataclass
class SendOutcome:
    """What happened to one send request."""

    sent: SentMessage | None  # None: already handled before (a replay)
    attempts: int = 0
    dead: DeadLetter | None = None
    audit: list[AuditEvent] = field(default_factory=list)


def _backoff(attempt: int, base: float) -> float:
    return min(MAX_RETRY_AFTER, base * 2**attempt) * (0.5 + random.random() / 2)


def _sent(req: SendRequest, status: str, now: datetime, **kw: str | None) -> SentMessage:
    return SentMessage(
        trace_id=req.trace_id,
        workspace_id=req.workspace_id,
        channel_id=req.channel_id,
        conversation_id=req.conversation_id,
        contact_external_id=req.contact_external_id,
        outbound_id=req.outbound_id,
        status=status,  # type: ignore[arg-type]
        occurred_at=now,
        **kw,
    )


def _audit(req: SendRequest, action: str, now: datetime, details: dict) -> AuditEvent:
    return AuditEvent(
        trace_id=req.trace_id,
        event_key=f"{action}:{req.outbound_id}",
        workspace_id=req.workspace_id,
        actor="system:send",
        action=action,
        object_type="message",
        object_id=str(req.outbound_id),
        details=details,
        occurred_at=now,
    )


async def deliver(
    pool: AsyncConnectionPool,
    http: aiohttp.ClientSession,
    req: SendRequest,
    *,
    box: SecretBox,
    max_attempts: int,
    timeout: float,
    now: Callable[[], datetime],
    backoff_base: float = 0.5,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    lookups: Lookups = READ_THROUGH,
) -> SendOutcome:
    """Send one request; record the outcome on the message row."""
    ws = req.workspace_id
    async with pool.connection() as conn:
        claimed = await messages.claim_for_send(conn, workspace_id=ws, message_id=req.outbound_id)
        if claimed is None:
            return SendOutcome(None)
        channel = await lookups.channel(conn, ws, req.channel_id)
        conv = await conversations.get_conversation(
            conn, workspace_id=ws, conversation_id=req.conversation_id
        )
    done = await _call_provider(
        pool, http, req, channel, conv, box, max_attempts, timeout, now, backoff_base, sleep
    )
    if isinstance(done, SendOutcome):
        return done
    at = now()
    async with pool.connection() as conn:
        await messages.mark_sent(
            conn,
            workspace_id=ws,
            message_id=req.outbound_id,
            provider_message_id=done.result.provider_message_id,
            sent_at=at,
        )
        await conversations.touch(
            conn, workspace_id=ws, conversation_id=req.conversation_id, at=at, inbound=False
        )
    return done.outcome(req, at)


async def deliver_batch(
    pool: AsyncConnectionPool,
    http: aiohttp.ClientSession,
    reqs: Sequence[SendRequest],
    *,
    box: SecretBox,
    max_attempts: int,
    timeout: float,
    now: Callable[[], datetime],
    backoff_base: float = 0.5,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    lookups: Lookups = READ_THROUGH,
    concurrency: int = 16,
) -> list[SendOutcome]:
    """``deliver`` for a batch: one outcome per request, in order.

    The claims, and then the successes, are one statement each for the whole batch;
    the provider calls of one conversation are made one after another in the batch's
    order (a conversation's replies arrive in order), different conversations
    concurrently. A failure or a refusal is recorded as ``deliver`` records it.
    Past the claim, each message is on its own: a transient error retries that message
    (as the stage retries a ``deliver``), anything else marks it failed and dead-letters
    it, so that no failure makes the batch send again what was already sent.
    """
    first: dict[UUID, int] = {}
    for i, r in enumerate(reqs):
        first.setdefault(r.outbound_id, i)  # a replay within the batch is a replay
    async with pool.connection() as conn:
        claimed = await bulk.claim_for_send(
            conn,
            [
                (r.workspace_id, r.outbound_id)
                for i, r in enumerate(reqs)
                if first[r.outbound_id] == i
            ],
        )
        channels = {
            r.channel_id: await lookups.channel(conn, r.workspace_id, r.channel_id)
            for r in reqs
            if r.outbound_id in claimed
        }
        convs = await bulk.get_conversations(
            conn,
            list({(r.workspace_id, r.conversation_id) for r in reqs if r.outbound_id in claimed}),
        )
    outcomes: list[SendOutcome] = [SendOutcome(None) for _ in reqs]
    delivered: list[tuple[int, _Delivered]] = []
    limit = asyncio.Semaphore(concurrency)

    async def one(r: SendRequest) -> SendOutcome | _Delivered:
        try:
            return await with_retry(
                "send",
                lambda: _call_provider(
                    pool,
                    http,
                    r,
                    channels.get(r.channel_id),
                    convs.get(r.conversation_id),
                    box,
                    max_attempts,
                    timeout,
                    now,
                    backoff_base,
                    sleep,
                ),
            )
        except Exception as exc:  # one bad message must not fail (and resend) the batch
            log.exception("send: message %s failed (trace %s)", r.outbound_id, r.trace_id)
            reason = f"{type(exc).__name__}: {exc}"
            return await with_retry("send", lambda: _fail(pool, r, now(), "internal_error", reason))

    async def conversation(indexes: list[int]) -> None:
        async with limit:
            for i in indexes:
                done = await one(reqs[i])
                if isinstance(done, SendOutcome):
                    outcomes[i] = done
                else:
                    delivered.append((i, done))

    groups: dict[UUID, list[int]] = {}
    for i, r in enumerate(reqs):
        if first[r.outbound_id] == i and r.outbound_id in claimed:
            groups.setdefault(r.conversation_id, []).append(i)
    await asyncio.gather(*(conversation(g) for g in groups.values()))
    if delivered:
        at = now()

        async def record(done: list[tuple[int, str | None]]) -> None:
            async with pool.connection() as conn:
                await bulk.mark_sent(
                    conn, [(reqs[i].workspace_id, reqs[i].outbound_id, pm, at) for i, pm in done]
                )
                touched = {(reqs[i].workspace_id, reqs[i].conversation_id) for i, _ in done}
                await bulk.touch_conversations(conn, [(ws, cid, at, None) for ws, cid in touched])

        # The providers have the messages: a passing database failure retries the record
        # only, never the sends (which a retried batch would make again).
        ids = [(i, d.result.provider_message_id) for i, d in delivered]
        refused: dict[int, str] = {}
        try:
            await with_retry("send", lambda: record(ids))
        except Exception:  # not transient (those are retried): a value PostgreSQL refuses
            log.exception("send: recording %d sends failed; recording them one by one", len(ids))
            for i, pm in ids:
                try:
                    await with_retry("send", lambda one=[(i, pm)]: record(one))
                except Exception as exc:  # the provider's message id: sent, recorded without
                    refused[i] = f"{type(exc).__name__}: {exc}"
                    await with_retry("send", lambda one=[(i, None)]: record(one))
        for i, d in delivered:
            outcomes[i] = d.outcome(reqs[i], at, refused.get(i))
    return outcomes


@dataclass
class _Delivered:
    """A provider accepted the message; the row is not updated yet."""

    result: SendResult
    provider: ProviderName
    attempts: int

    def outcome(self, req: SendRequest, at: datetime, refused: str | None = None) -> SendOutcome:
        """Sent (or stored); ``refused``: why the provider's message id could not be kept
        (the message is sent all the same, and a dead letter says so)."""
        status = "stored" if self.provider is ProviderName.SANDBOX else "sent"
        if refused is None:
            sent = _sent(req, status, at, provider_message_id=self.result.provider_message_id)
            return SendOutcome(sent, attempts=self.attempts)
        dead = DeadLetter(
            trace_id=req.trace_id,
            stage="send",
            reason=f"sent, but the provider's message id was refused: {refused}",
            error_code="data_error",
            workspace_id=req.workspace_id,
            channel_id=req.channel_id,
            payload={"provider_message_id": self.result.provider_message_id},
        )
        return SendOutcome(_sent(req, status, at), attempts=self.attempts, dead=dead)


async def _call_provider(
    pool: AsyncConnectionPool,
    http: aiohttp.ClientSession,
    req: SendRequest,
    channel: dict | None,
    conv: dict | None,
    box: SecretBox,
    max_attempts: int,
    timeout: float,
    now: Callable[[], datetime],
    backoff_base: float,
    sleep: Callable[[float], Awaitable[None]],
) -> SendOutcome | _Delivered:
    """Send a claimed message, retrying what may pass; a failure or refusal is recorded
    here and returned as the outcome, a success is returned for the caller to record."""
    if channel is None or conv is None:
        return await _fail(pool, req, now(), "channel_missing", "the channel no longer exists")

    provider = ProviderName(channel["provider"])
    last_in = conv["last_inbound_at"]
    if provider is not ProviderName.SANDBOX and (last_in is None or now() - last_in > WINDOW):
        return await _block(pool, req, now(), last_in)

    config = parse_config(provider, {**channel["config"], **box.open(channel["secrets"])})
    to = req.contact_phone or req.contact_external_id
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await get_provider(provider).send_text(
                http, config, to=to, text=req.text, timeout=timeout
            )
        except ProviderError as exc:
            if exc.outside_window:
                return await _block(pool, req, now(), last_in, code=exc.code)
            if exc.retriable and attempt < max_attempts:
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else _backoff(attempt - 1, backoff_base)
                )
                await sleep(min(delay, MAX_RETRY_AFTER))
                continue
            out = await _fail(pool, req, now(), exc.code or "provider_error", exc.message)
            out.attempts = attempt
            return out
        return _Delivered(result, provider, attempt)


async def _fail(
    pool: AsyncConnectionPool, req: SendRequest, at: datetime, code: str, message: str
) -> SendOutcome:
    async with pool.connection() as conn:
        await messages.mark_failed(
            conn,
            workspace_id=req.workspace_id,
            message_id=req.outbound_id,
            status="failed",
            error_code=code,
            error_message=message,
        )
    dead = DeadLetter(
        trace_id=req.trace_id,
        stage="send",
        reason=message,
        error_code=code,
        workspace_id=req.workspace_id,
        channel_id=req.channel_id,
        payload=req.model_dump(mode="json"),
    )
    return SendOutcome(_sent(req, "failed", at, error_code=code, error_message=message), dead=dead)


async def _block(
    pool: AsyncConnectionPool,
    req: SendRequest,
    at: datetime,
    last_inbound: datetime | None,
    code: str | None = None,
) -> SendOutcome:
    reason = "outside WhatsApp's 24-hour customer-service window"
    async with pool.connection() as conn:
        await messages.mark_failed(
            conn,
            workspace_id=req.workspace_id,
            message_id=req.outbound_id,
            status="blocked",
            error_code=code or "outside_window",
            error_message=reason,
        )
    audit = _audit(
        req,
        "message.blocked_outside_window",
        at,
        {
            "last_inbound_at": last_inbound.isoformat() if last_inbound else None,
            "provider_code": code,
        },
    )
    return SendOutcome(
        _sent(req, "blocked", at, error_code=code or "outside_window", error_message=reason),
        audit=[audit],
    )
