"""send: deliver an outbound message through its provider, once per message id, and never let
one channel hold the others.

1. **Claim** (``pending → sending``): a message that reached ``sent``, ``failed`` or
   ``blocked``, or that carries a provider id, is never claimed again, whatever replays it.
2. **Refuse before calling**: the channel or workspace was deactivated after the message
   entered the stream (``blocked``, audited), the 24-hour window is closed (``blocked``,
   audited), the channel or conversation is gone (``failed``).
3. **Call** within bounds: one message's calls and in-line waits end by ``deadline``; a
   channel's circuit breaker and call slots (``agents_pipeline.breaker``) keep a failing or
   hanging provider from taking more than its share. Whatever must wait longer (a
   Retry-After, a backoff, an open breaker, an earlier message of the conversation that
   waits) is **deferred**: written to ``send_deferrals`` and produced again by the sweep
   when due, so the batch ends and the stream moves on. The conversation's later messages
   are deferred behind it, so they still go out in order.
4. **Record**: after a provider accepted a message, only the recording is retried (any
   database failure, with backoff), never the send; until it is recorded the worker keeps
   the provider's answer (``SendState.accepted``), so that even a batch retried by the
   stage records it instead of sending it again. What is left: a worker that dies between
   the provider's answer and the recording, and a call that timed out after the provider
   took it; either message is sent again (docs/ARCHITECTURE.md, send).

Workspaces see only our error codes and texts (``agents_pipeline.send_errors``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import aiohttp
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed
from pydantic import ValidationError

from agents_pipeline.breaker import ChannelBreakers, ChannelSlots
from agents_pipeline.errors import ProviderError
from agents_pipeline.lookups import READ_THROUGH, Lookups
from agents_pipeline.providers import get_provider
from agents_pipeline.providers.base import SendResult
from agents_pipeline.providers.configs import parse_config
from agents_pipeline.send_errors import PublicError, public, public_error
from storage import bulk, messages, send_queue
from storage.secrets import SecretBox
from streams.contracts import AuditEvent, DeadLetter, ProviderName, SendRequest, SentMessage
from streams.retry import DATA_ERRORS

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
BUSY_DELAY = 2.0  # a message that found no call slot of its channel tries again this soon
# A claim (``sending``) another worker may not take over for this long: longer than a
# batch's calls (deadline each); and a requeued deferral not handled within it is
# produced again.
LEASE = 60.0
# Database failures the recording of an accepted send outlives: the provider has the
# message, so the row must say so; retried with backoff until it does.
RECORD_RETRIABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.InternalError,
    psycopg.errors.InsufficientPrivilege,
    psycopg.errors.TransactionRollback,
    OSError,
)


@dataclass(frozen=True)
class SendPolicy:
    """The send stage's bounds (settings ``OMNICHAT_SEND_*``)."""

    max_attempts: int = 5  # provider calls per message, across deferrals
    timeout: float = 10.0  # one call
    deadline: float = 15.0  # one message's calls and in-line waits within a batch
    inline_wait: float = 1.0  # the longest wait retried in-line; longer ones are deferred
    backoff_base: float = 1.0  # first retry's delay without Retry-After (doubles per call)
    max_defer: float = 900.0  # cap of one deferral (Retry-After included)
    channel_concurrency: int = 8  # calls in flight per channel and worker
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0


class SendState:
    """What the send stage keeps in one worker across batches."""

    def __init__(self, policy: SendPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.breakers = ChannelBreakers(
            policy.breaker_failures,
            policy.breaker_cooldown,
            probe_timeout=2 * policy.deadline,
            clock=clock,
        )
        self.slots = ChannelSlots(policy.channel_concurrency)
        self.claimer = uuid4()  # this worker, in its send claims
        # Provider answers not recorded yet: a retried batch records them, never resends.
        self.accepted: dict[UUID, SendResult] = {}


@dataclass
class SendOutcome:
    """What happened to one send request."""

    sent: SentMessage | None  # None: nothing to report (a replay, or deferred)
    attempts: int = 0
    dead: DeadLetter | None = None
    audit: list[AuditEvent] = field(default_factory=list)
    deferred: str | None = None  # why the message waits in send_deferrals


@dataclass
class _Delivered:
    """A provider accepted the message; the row is not updated yet."""

    result: SendResult
    provider: ProviderName
    attempts: int


@dataclass
class _Refused:
    """The message will not be sent: ``failed`` or ``blocked``."""

    status: str
    error: PublicError
    attempts: int = 0
    audit: list[AuditEvent] = field(default_factory=list)
    dead: bool = False


@dataclass
class _Deferred:
    """The message waits until ``not_before``."""

    reason: str
    not_before: datetime
    attempts: int


@dataclass
class _Stale:
    """A copy of a request produced before the message's latest deferral: dropped (the
    deferral produces it again when due, and the conversation's next messages wait)."""

    not_before: datetime


Decision = _Delivered | _Refused | _Deferred | _Stale


async def deliver(
    pool: AsyncConnectionPool,
    http: aiohttp.ClientSession,
    req: SendRequest,
    *,
    box: SecretBox,
    now: Callable[[], datetime],
    policy: SendPolicy | None = None,
    state: SendState | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    lookups: Lookups = READ_THROUGH,
) -> SendOutcome:
    """Send one request (``deliver_batch`` of one)."""
    [outcome] = await deliver_batch(
        pool,
        http,
        [req],
        box=box,
        now=now,
        policy=policy,
        state=state,
        sleep=sleep,
        lookups=lookups,
    )
    return outcome


async def deliver_batch(
    pool: AsyncConnectionPool,
    http: aiohttp.ClientSession,
    reqs: Sequence[SendRequest],
    *,
    box: SecretBox,
    now: Callable[[], datetime],
    policy: SendPolicy | None = None,
    state: SendState | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    lookups: Lookups = READ_THROUGH,
    concurrency: int = 64,
) -> list[SendOutcome]:
    """Send a batch: one outcome per request, in order.

    The claims, the deferral states, and then every outcome are one statement each for
    the batch (a few more for failures). A conversation's messages are sent one after
    another in the batch's order, conversations concurrently. Past the claim each
    message is on its own: nothing one message does makes the batch send another again.
    """
    policy = policy or SendPolicy()
    state = state or SendState(policy)
    first: dict[UUID, int] = {}
    for i, r in enumerate(reqs):
        first.setdefault(r.outbound_id, i)  # a replay within the batch is a replay
    unique = [i for i, r in enumerate(reqs) if first[r.outbound_id] == i]
    async with pool.connection() as conn:
        claimed, elsewhere = await bulk.claim_for_send(
            conn,
            [(reqs[i].workspace_id, reqs[i].outbound_id) for i in unique],
            claimer=state.claimer,
            lease_seconds=LEASE,
        )
        todo = [i for i in unique if reqs[i].outbound_id in claimed]
        # Held by another worker (which may still be sending it): tried again once its
        # claim runs out, through the deferrals.
        held = [i for i in unique if reqs[i].outbound_id in elsewhere]
        waits = await send_queue.state(
            conn, [(reqs[i].workspace_id, reqs[i].outbound_id) for i in todo + held]
        )
        channels: dict[tuple[UUID, UUID], dict | None] = {}
        workspaces: dict[UUID, dict | None] = {}
        for i in todo:
            r = reqs[i]
            if (r.workspace_id, r.channel_id) not in channels:
                channels[r.workspace_id, r.channel_id] = await lookups.channel(
                    conn, r.workspace_id, r.channel_id
                )
            if r.workspace_id not in workspaces:
                workspaces[r.workspace_id] = await lookups.workspace(conn, r.workspace_id)
        convs = await bulk.get_conversations(
            conn, list({(reqs[i].workspace_id, reqs[i].conversation_id) for i in todo})
        )

    at = now()
    pre: dict[int, Decision] = {}
    for i in todo:
        r = reqs[i]
        decided = _before_calling(
            r,
            channels[r.workspace_id, r.channel_id],
            workspaces[r.workspace_id],
            convs.get(r.conversation_id),
            waits.get(r.outbound_id),
            at,
        )
        if decided is not None:
            pre[i] = decided

    call = _Caller(http, box, policy, state, now, sleep)
    decisions: dict[int, Decision] = {}
    limit = asyncio.Semaphore(concurrency)

    async def conversation(indexes: list[int]) -> None:
        async with limit:
            behind: _Deferred | None = None  # an earlier message of it waits: so do the next
            for i in indexes:
                r = reqs[i]
                prior = int((waits.get(r.outbound_id) or {}).get("attempts", 0))
                d = pre.get(i)
                if behind is not None and not isinstance(d, _Refused | _Stale):
                    d = _Deferred("behind_deferred", behind.not_before, prior)
                elif d is None:
                    d = await call(r, channels[r.workspace_id, r.channel_id] or {}, prior)
                decisions[i] = d
                if isinstance(d, _Deferred):
                    behind = d
                elif isinstance(d, _Stale) and behind is None:
                    behind = _Deferred("behind_deferred", d.not_before, prior)

    for i in held:  # they keep their place in their conversation's order
        prior = int((waits.get(reqs[i].outbound_id) or {}).get("attempts", 0))
        pre[i] = _Deferred("in_flight_elsewhere", elsewhere[reqs[i].outbound_id], prior)
    groups: dict[UUID, list[int]] = {}
    for i in sorted(todo + held):
        groups.setdefault(reqs[i].conversation_id, []).append(i)
    await asyncio.gather(*(conversation(g) for g in groups.values()))

    sent_at = now()
    without_id = await _record(pool, reqs, decisions, set(held), sent_at)
    for i, d in decisions.items():
        if isinstance(d, _Delivered):
            state.accepted.pop(reqs[i].outbound_id, None)
    outcomes = [SendOutcome(None) for _ in reqs]
    for i, d in decisions.items():
        outcomes[i] = _outcome(reqs[i], d, sent_at, without_id.get(i))
    return outcomes


def _before_calling(
    r: SendRequest,
    channel: dict | None,
    workspace: dict | None,
    conv: dict | None,
    wait: dict | None,
    at: datetime,
) -> Decision | None:
    """What is decided without calling the provider; None: call it."""
    if wait is not None and wait["deferred"] and not wait["requeued"]:
        return _Stale(wait["not_before"])
    if channel is None:
        return _Refused("failed", public("channel_missing"), dead=True)
    if workspace is None or not workspace["is_active"]:
        return _inactive(r, "workspace_inactive", at)
    if not channel["is_active"]:
        return _inactive(r, "channel_inactive", at)
    if conv is None:
        return _Refused("failed", public("conversation_missing"), dead=True)
    last_in = conv["last_inbound_at"]
    if channel["provider"] != ProviderName.SANDBOX.value and (
        last_in is None or at - last_in > WINDOW
    ):
        return _outside_window(r, at, last_in, None)
    if wait is not None and wait["behind_until"] is not None:
        return _Deferred("behind_deferred", wait["behind_until"], int(wait["attempts"]))
    return None


class _Caller:
    """Calls a provider for one message within the policy's bounds, and decides."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        box: SecretBox,
        policy: SendPolicy,
        state: SendState,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.http, self.box, self.policy, self.state = http, box, policy, state
        self.now, self.sleep = now, sleep

    async def __call__(self, r: SendRequest, channel: dict, prior: int) -> Decision:
        """Never raises for one message's trouble: a bug fails that message alone."""
        try:
            return await self._attempts(r, channel, prior)
        except Exception:
            log.exception("send: message %s failed (trace %s)", r.outbound_id, r.trace_id)
            return _Refused("failed", public("internal_error"), prior, dead=True)

    def _defer(self, reason: str, delay: float, attempts: int) -> _Deferred:
        delay = min(max(delay, 0.5), self.policy.max_defer)
        return _Deferred(reason, self.now() + timedelta(seconds=delay), attempts)

    def _backoff(self, attempts: int) -> float:
        base = self.policy.backoff_base * 2 ** max(0, attempts - 1)
        return min(self.policy.max_defer, base) * (0.5 + random.random() / 2)

    async def _attempts(self, r: SendRequest, channel: dict, prior: int) -> Decision:
        provider = ProviderName(channel["provider"])
        accepted = self.state.accepted.get(r.outbound_id)
        if accepted is not None:  # sent before and not recorded: record it, never resend
            return _Delivered(accepted, provider, prior)
        p, breakers, slots = self.policy, self.state.breakers, self.state.slots
        config = parse_config(provider, {**channel["config"], **self.box.open(channel["secrets"])})
        to = r.contact_phone or r.contact_external_id
        guarded = provider is not ProviderName.SANDBOX
        cid = channel["id"]
        loop = asyncio.get_running_loop()
        end = loop.time() + p.deadline
        attempts = prior
        while True:
            probe = False
            if guarded:
                verdict = breakers.admit(cid)
                if not verdict.admit:
                    return self._defer("circuit_open", verdict.retry_in, attempts)
                probe = verdict.probe
                if not await slots.acquire(cid, min(p.inline_wait, max(0.0, end - loop.time()))):
                    breakers.release(cid, probe=probe)
                    return self._defer("channel_busy", BUSY_DELAY, attempts)
            attempts += 1
            error: ProviderError | None = None
            try:
                result = await get_provider(provider).send_text(
                    self.http,
                    config,
                    to=to,
                    text=r.text,
                    timeout=max(0.05, min(p.timeout, end - loop.time())),
                )
            except ProviderError as exc:
                error = exc
            except BaseException:
                breakers.release(cid, probe=probe)
                raise
            finally:
                if guarded:
                    slots.release(cid)
            if error is None:
                if guarded:
                    breakers.succeeded(cid)
                self.state.accepted[r.outbound_id] = result
                return _Delivered(result, provider, attempts)

            shown = public_error(error)
            # The provider's own words go to our log only (never to the workspace).
            log.warning(
                "send: %s for message %s of channel %s (attempt %d, trace %s): %s",
                shown.code,
                r.outbound_id,
                cid,
                attempts,
                r.trace_id,
                error.message,
            )
            if error.code in ("destination_not_allowed", "invalid_url", "redirect_not_followed"):
                breakers.release(cid, probe=probe)
                audit = []
                if error.code == "destination_not_allowed":
                    audit.append(_destination_audit(r, channel, self.now()))
                return _Refused("failed", shown, attempts, audit, dead=True)
            if error.outside_window:
                breakers.succeeded(cid)
                return _outside_window(r, self.now(), None, shown.provider_code, attempts)
            if not error.retriable:
                breakers.succeeded(cid)  # it answered: the channel works, the message does not
                return _Refused("failed", shown, attempts, dead=True)
            asked = error.retry_after
            pause = asked if asked is not None and asked > p.inline_wait else None
            opened = guarded and breakers.failed(cid, probe=probe, pause=pause)
            if attempts >= p.max_attempts:
                return _Refused("failed", shown, attempts, dead=True)
            delay = asked if asked is not None else self._backoff(attempts)
            if not opened and delay <= p.inline_wait and loop.time() + delay < end:
                await self.sleep(delay)
                continue
            return self._defer(shown.code, max(delay, breakers.retry_in(cid)), attempts)


async def _record(
    pool: AsyncConnectionPool,
    reqs: Sequence[SendRequest],
    decisions: dict[int, Decision],
    held: set[int],
    at: datetime,
) -> dict[int, str]:
    """Write every decision of the batch in one transaction, retried until it holds.

    ``held``: messages another worker holds, deferred without touching their claim. A
    value PostgreSQL refuses (a provider's message id with a NUL, say) fails the same way
    every time: the decisions are then written one by one, a delivery whose id is refused
    is recorded sent without it, and anything else that cannot be written fails its
    message. Returns the deliveries recorded without their id (index → why)."""
    if not decisions:
        return {}

    def deferral(i: int, d: _Deferred) -> send_queue.Deferral:
        r = reqs[i]
        return send_queue.Deferral(
            workspace_id=r.workspace_id,
            message_id=r.outbound_id,
            channel_id=r.channel_id,
            conversation_id=r.conversation_id,
            request=r.model_dump(mode="json"),
            reason=d.reason,
            attempts=d.attempts,
            not_before=d.not_before,
        )

    async def write(items: list[tuple[int, Decision]], *, with_ids: bool = True) -> None:
        delivered = [(i, d) for i, d in items if isinstance(d, _Delivered)]
        refused = [(i, d) for i, d in items if isinstance(d, _Refused)]
        deferred = [(i, d) for i, d in items if isinstance(d, _Deferred)]
        stale = [i for i, d in items if isinstance(d, _Stale)]
        done = [
            (reqs[i].workspace_id, reqs[i].outbound_id)
            for i, d in items
            if isinstance(d, _Delivered | _Refused)
        ]
        async with pool.connection() as conn, conn.transaction():
            if delivered:
                await bulk.mark_sent(
                    conn,
                    [
                        (
                            reqs[i].workspace_id,
                            reqs[i].outbound_id,
                            d.result.provider_message_id if with_ids else None,
                            at,
                        )
                        for i, d in delivered
                    ],  # type: ignore[misc]
                )
                touched = {(reqs[i].workspace_id, reqs[i].conversation_id) for i, _ in delivered}
                await bulk.touch_conversations(conn, [(w, c, at, None) for w, c in touched])
            for i, d in refused:
                await messages.mark_failed(
                    conn,
                    workspace_id=reqs[i].workspace_id,
                    message_id=reqs[i].outbound_id,
                    status=d.status,
                    error_code=d.error.code,
                    error_message=d.error.message,
                )
            await send_queue.clear(conn, done)
            await send_queue.defer(conn, [deferral(i, d) for i, d in deferred if i not in held])
            await send_queue.defer(
                conn, [deferral(i, d) for i, d in deferred if i in held], release_claims=False
            )
            await send_queue.release(
                conn, [(reqs[i].workspace_id, reqs[i].outbound_id) for i in stale]
            )

    items = list(decisions.items())
    try:
        await record_with_retry(lambda: write(items), what=f"a batch of {len(items)} sends")
        return {}
    except DATA_ERRORS:
        log.exception("send: recording %d sends failed; recording them one by one", len(items))
    without_id: dict[int, str] = {}
    for i, d in items:
        try:
            await record_with_retry(lambda one=[(i, d)]: write(one), what="one send")  # type: ignore[misc]
            continue
        except DATA_ERRORS as exc:
            why = f"{type(exc).__name__}: {exc}"
        if isinstance(d, _Delivered):  # sent all the same: recorded without the id
            without_id[i] = why
            await record_with_retry(
                lambda one=[(i, d)]: write(one, with_ids=False),  # type: ignore[misc]
                what="one send without its id",
            )
        else:
            attempts = d.attempts if isinstance(d, _Deferred | _Refused) else 0
            failed = _Refused("failed", public("internal_error"), attempts, dead=True)
            decisions[i] = failed
            await record_with_retry(lambda one=[(i, failed)]: write(one), what="one failure")  # type: ignore[misc]
    return without_id


async def record_with_retry(
    work: Callable[[], Awaitable[Any]],
    *,
    what: str,
    first_delay: float = 0.2,
    max_delay: float = 10.0,
) -> None:
    """Run a recording until it succeeds: the provider already has the message, so only
    the database write may be retried, through any passing database failure."""
    delay = first_delay
    while True:
        try:
            await work()
            return
        except PoolClosed:
            raise  # the worker is stopping: the replay's claim takes it from here
        except RECORD_RETRIABLE as exc:
            if isinstance(exc, DATA_ERRORS):
                raise  # the data, not the database: the same every time
            log.warning("send: recording %s failed, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)


def _outcome(
    req: SendRequest, d: Decision, at: datetime, without_id: str | None = None
) -> SendOutcome:
    """The outcome to report for a recorded decision (``without_id``: why a delivery was
    recorded without the provider's message id; a dead letter says so)."""
    if isinstance(d, _Delivered):
        status = "stored" if d.provider is ProviderName.SANDBOX else "sent"
        if without_id is None:
            sent = _sent(req, status, at, provider_message_id=d.result.provider_message_id)
            return SendOutcome(sent, attempts=d.attempts)
        dead = DeadLetter(
            trace_id=req.trace_id,
            stage="send",
            reason=f"sent, but the provider's message id was refused: {without_id}",
            error_code="data_error",
            workspace_id=req.workspace_id,
            channel_id=req.channel_id,
            payload={"provider_message_id": d.result.provider_message_id},
        )
        return SendOutcome(_sent(req, status, at), attempts=d.attempts, dead=dead)
    if isinstance(d, _Deferred):
        return SendOutcome(None, attempts=d.attempts, deferred=d.reason)
    if isinstance(d, _Stale):
        return SendOutcome(None)
    err = d.error
    sent = _sent(
        req,
        d.status,
        at,
        error_code=err.code,
        error_message=err.message,
        provider_code=err.provider_code,
    )
    dead = None
    if d.dead:
        dead = DeadLetter(
            trace_id=req.trace_id,
            stage="send",
            reason=err.message,
            error_code=err.code,
            workspace_id=req.workspace_id,
            channel_id=req.channel_id,
            payload=req.model_dump(mode="json"),
        )
    return SendOutcome(sent, attempts=d.attempts, dead=dead, audit=d.audit)


async def requeue_due(
    pool: AsyncConnectionPool, *, limit: int = 500, lease: float = LEASE
) -> list[SendRequest]:
    """The deferred requests that are due, to produce to ``messages.send`` again in order."""
    async with pool.connection() as conn, conn.transaction():
        rows = await send_queue.take_due(conn, limit=limit, lease_seconds=lease)
    out = []
    for row in rows:
        try:
            out.append(SendRequest.model_validate(row["request"]))
        except ValidationError:
            log.exception("send: deferred request of message %s is unreadable", row["message_id"])
    return out


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


def _audit(
    req: SendRequest,
    action: str,
    now: datetime,
    details: dict,
    *,
    object_type: str = "message",
    object_id: str | None = None,
) -> AuditEvent:
    return AuditEvent(
        trace_id=req.trace_id,
        event_key=f"{action}:{req.outbound_id}",
        workspace_id=req.workspace_id,
        actor="system:send",
        action=action,
        object_type=object_type,
        object_id=object_id or str(req.outbound_id),
        details=details,
        occurred_at=now,
    )


def _inactive(req: SendRequest, code: str, at: datetime) -> _Refused:
    """A message of a channel or workspace deactivated after it entered the stream."""
    audit = _audit(req, "message.send_refused", at, {"reason": code})
    return _Refused("blocked", public(code), audit=[audit])


def _outside_window(
    req: SendRequest,
    at: datetime,
    last_inbound: datetime | None,
    provider_code: str | None,
    attempts: int = 0,
) -> _Refused:
    audit = _audit(
        req,
        "message.blocked_outside_window",
        at,
        {
            "last_inbound_at": last_inbound.isoformat() if last_inbound else None,
            "provider_code": provider_code,
        },
    )
    error = PublicError("outside_window", public("outside_window").message, provider_code)
    return _Refused("blocked", error, attempts, [audit])


def _destination_audit(req: SendRequest, channel: dict, at: datetime) -> AuditEvent:
    """The channel's audit row for a send its base_url's address made us refuse."""
    host = urlsplit(str(channel["config"].get("base_url") or "")).hostname
    return _audit(
        req,
        "channel.destination_not_allowed",
        at,
        {"message_id": str(req.outbound_id), "host": host},
        object_type="channel",
        object_id=str(channel["id"]),
    )
