"""The conversation stages: resolve → retrieve → generate → reply → send, and statuses.

Each handler is a few lines: parse is done by ``stage_agent``, the work by the
stage's plain functions in ``agents_pipeline/``, and the handler only says what
to send on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import faust

from agents_pipeline.active import inactive_reasons, not_answered
from agents_pipeline.lookups import Lookups
from agents_pipeline.quota import QuotaGate, month_of
from agents_pipeline.reply import prepare_replies, prepare_reply
from agents_pipeline.resolve import ResolveOutcome, resolve
from agents_pipeline.resolve_batch import resolve_batch
from agents_pipeline.retrieve import NoKnowledge, Retriever, retrieve
from agents_pipeline.run_agent import AgentRun, Unreported, run_agent
from agents_pipeline.run_agent_batch import run_agents
from agents_pipeline.send import (
    SendOutcome,
    SendPolicy,
    SendState,
    deliver,
    deliver_batch,
    requeue_due,
)
from agents_pipeline.status import apply_status
from streams import produce
from streams.agents.stage import Out, pipelined_agent, stage_agent
from streams.contracts import (
    AuditEvent,
    GeneratedReply,
    InboundMessage,
    ResolvedMessage,
    RetrievedMessage,
    SendRequest,
    StatusUpdate,
    UsageEvent,
)
from streams.partitions import workspace_partition
from streams.tables import WorkspaceCounters
from streams.topology import encode

if TYPE_CHECKING:
    from streams.app import OmnichatApp

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def usage(
    trace_id: str, key: str, workspace_id: object, kind: str, amount: int, **extra: object
) -> UsageEvent:
    """A usage increment with the key that makes it count once (``extra``: its details)."""
    now = _now()
    return UsageEvent(
        trace_id=trace_id,
        event_key=f"{kind}:{key}",
        workspace_id=workspace_id,
        kind=kind,
        amount=amount,
        day=now.date(),
        occurred_at=now,
        **extra,
    )  # type: ignore[arg-type]


def quota_audit(msg: RetrievedMessage, metric: str, detail: str | None) -> AuditEvent:
    """The audit row of a workspace reaching a monthly limit: once per metric and month."""
    month = month_of(_now())
    return AuditEvent(
        trace_id=msg.trace_id,
        event_key=f"quota:{msg.workspace_id}:{month}:{metric}",
        workspace_id=msg.workspace_id,
        actor="system",
        action="quota.exceeded",
        object_type="workspace",
        object_id=str(msg.workspace_id),
        details={
            "metric": metric,
            "month": month,
            "detail": detail,
            "message_id": str(msg.message_id),
        },
        occurred_at=_now(),
    )


def register(
    app: OmnichatApp,
    *,
    quota_counters: faust.Table,
    retriever: Retriever | None = None,
) -> None:
    """Add the conversation stages to the app.

    ``quota_counters`` holds each workspace's LLM tokens and answered messages per
    month; it lives on the workspace's partition, as generate's events do.
    """
    t = app.topics_
    res = app.resources
    s = app.settings
    m = app.metrics
    knowledge = retriever or NoKnowledge()
    lookups = Lookups(ttl=5.0)
    gate = QuotaGate(WorkspaceCounters(quota_counters, s.topic_partitions))
    unreported = Unreported()  # LLM runs of a failed batch attempt, reported by its retry
    send_policy = SendPolicy(
        max_attempts=s.send_max_attempts,
        timeout=s.send_timeout_seconds,
        deadline=s.send_deadline_seconds,
        inline_wait=s.send_inline_wait_seconds,
        channel_concurrency=s.send_channel_concurrency,
        breaker_failures=s.send_breaker_failures,
        breaker_cooldown=s.send_breaker_cooldown_seconds,
    )
    send_state = SendState(send_policy)  # breakers, slots, accepted-not-recorded sends

    async def on_normalized(msg: InboundMessage) -> list[Out]:
        pool = await res.pool()
        async with pool.connection() as conn, conn.transaction():
            outcome = await resolve(
                conn, msg, takeover_seconds=s.human_takeover_seconds, now=_now(), lookups=lookups
            )
        return resolved_outs(msg, outcome)

    async def on_normalized_batch(msgs: list[InboundMessage]) -> list[list[Out]]:
        pool = await res.pool()
        async with pool.connection() as conn, conn.transaction():
            outcomes = await resolve_batch(
                conn, msgs, takeover_seconds=s.human_takeover_seconds, now=_now(), lookups=lookups
            )
        return [resolved_outs(m, o) for m, o in zip(msgs, outcomes, strict=True)]

    def resolved_outs(msg: InboundMessage, outcome: ResolveOutcome) -> list[Out]:
        out = [Out(t.audit, a, str(a.workspace_id)) for a in outcome.audit]
        if outcome.created:
            out.append(
                Out(
                    t.usage,
                    usage(
                        msg.trace_id,
                        msg.event_key,
                        msg.workspace_id,
                        "inbound_messages",
                        1,
                        channel_id=msg.channel_id,
                    ),
                    str(msg.workspace_id),
                )
            )
        if outcome.conversation_opened:
            out.append(
                Out(
                    t.usage,
                    usage(
                        msg.trace_id,
                        str(outcome.conversation_id),
                        msg.workspace_id,
                        "conversations_opened",
                        1,
                        channel_id=msg.channel_id,
                    ),
                    str(msg.workspace_id),
                )
            )
        if outcome.resolved is not None:
            out.append(Out(t.resolved, outcome.resolved, outcome.resolved.key))
        return out

    async def on_status(update: StatusUpdate) -> list[Out]:
        pool = await res.pool()
        async with pool.connection() as conn:
            await apply_status(conn, update)
        return []

    async def on_resolved(msg: ResolvedMessage) -> list[Out]:
        found = await retrieve(msg, retriever=knowledge)
        if found.retrieval_error is not None:  # answered without knowledge: say so
            m.retrieval_errors.inc()
        # Conversation key, workspace partition: generate owns the workspace's quota.
        where = workspace_partition(found.workspace_id, s.topic_partitions)
        return [Out(t.retrieved, found, found.key, partition=where)]

    async def refused(msgs: list[RetrievedMessage]) -> list[str | None]:
        """Why each message must not be answered (a deactivation since it came in), or None."""
        pool = await res.pool()
        async with pool.connection() as conn:
            return await inactive_reasons(conn, lookups, msgs)

    def not_answered_outs(msg: RetrievedMessage, reason: str) -> list[Out]:
        audit = not_answered(msg, reason, _now())
        return [Out(t.audit, audit, str(msg.workspace_id))]

    async def on_retrieved(msg: RetrievedMessage) -> list[Out]:
        [reason] = await refused([msg])
        if reason is not None:
            return not_answered_outs(msg, reason)
        pool = await res.pool()
        await res.http()  # opens the LLM client when one is configured
        run = await run_agent(
            pool,
            msg,
            llm=res.llm,
            default_model=s.llm_model,
            lookups=lookups,
            gate=gate,
            unreported=unreported,
        )
        return generated_outs(msg, run)

    async def on_retrieved_batch(msgs: list[RetrievedMessage]) -> list[list[Out]]:
        reasons = await refused(msgs)
        answered = [m for m, why in zip(msgs, reasons, strict=True) if why is None]
        pool = await res.pool()
        await res.http()
        done = iter(
            await run_agents(
                pool,
                answered,
                llm=res.llm,
                default_model=s.llm_model,
                lookups=lookups,
                gate=gate,
                unreported=unreported,
            )
            if answered
            else []
        )
        return [
            generated_outs(m, next(done)) if why is None else not_answered_outs(m, why)
            for m, why in zip(msgs, reasons, strict=True)
        ]

    def generated_outs(msg: RetrievedMessage, run: AgentRun) -> list[Out]:
        out: list[Out] = [Out(t.generated, run.reply, run.reply.key)]
        r = run.result
        if r is not None:
            out.append(
                Out(
                    t.usage,
                    usage(
                        msg.trace_id,
                        str(msg.message_id),
                        msg.workspace_id,
                        "agent_runs",
                        1,
                        outcome=r.outcome,
                        latency_ms=r.latency_ms,
                        cost_usd=r.cost_usd,
                    ),
                    str(msg.workspace_id),
                )
            )
        if run.refusal is not None and r is not None:
            metric = run.refusal.refused or "unknown"
            m.quota_refusals.labels(metric).inc()
            out.append(Out(t.audit, quota_audit(msg, metric, r.error), str(msg.workspace_id)))
        elif r is not None:
            model = m.model(r.model)  # never the version's free text as a label
            m.llm_calls.labels(model, r.outcome).inc()
            m.llm_tokens.labels(model, "prompt").inc(r.prompt_tokens)
            m.llm_tokens.labels(model, "completion").inc(r.completion_tokens)
            m.llm_latency.labels(model).observe(r.latency_ms / 1000)
            m.llm_cost.labels(model).inc(r.cost_usd)
            ws = str(msg.workspace_id)
            key = str(msg.message_id)
            out += [
                Out(
                    t.usage,
                    usage(
                        msg.trace_id, key, msg.workspace_id, "llm_prompt_tokens", r.prompt_tokens
                    ),
                    ws,
                ),
                Out(
                    t.usage,
                    usage(
                        msg.trace_id,
                        key,
                        msg.workspace_id,
                        "llm_completion_tokens",
                        r.completion_tokens,
                    ),
                    ws,
                ),
            ]
        return out

    async def on_generated(gen: GeneratedReply) -> list[Out]:
        pool = await res.pool()
        async with pool.connection() as conn:
            req = await prepare_reply(conn, gen)
        return [] if req is None else [Out(t.send, req, req.key)]

    async def on_generated_batch(gens: list[GeneratedReply]) -> list[list[Out]]:
        pool = await res.pool()
        async with pool.connection() as conn:
            reqs = await prepare_replies(conn, gens)
        return [[] if req is None else [Out(t.send, req, req.key)] for req in reqs]

    async def on_send(req: SendRequest) -> list[Out]:
        pool = await res.pool()
        http = await res.http()
        assert res.box is not None, "the worker needs secret_key to read channel credentials"
        outcome = await deliver(
            pool,
            http,
            req,
            box=res.box,
            policy=send_policy,
            state=send_state,
            now=_now,
            lookups=lookups,
        )
        return sent_outs(req, outcome)

    async def on_send_batch(reqs: list[SendRequest]) -> list[list[Out]]:
        pool = await res.pool()
        http = await res.http()
        assert res.box is not None, "the worker needs secret_key to read channel credentials"
        outcomes = await deliver_batch(
            pool,
            http,
            reqs,
            box=res.box,
            policy=send_policy,
            state=send_state,
            now=_now,
            lookups=lookups,
        )
        return [sent_outs(r, o) for r, o in zip(reqs, outcomes, strict=True)]

    def sent_outs(req: SendRequest, outcome: SendOutcome) -> list[Out]:
        if outcome.deferred is not None:
            m.send_deferrals.labels(outcome.deferred).inc()
            return []
        if outcome.sent is None:
            m.dedupe_hits.labels("send").inc()
            return []
        sent = outcome.sent
        m.sends.labels(req.provider.value, sent.status).inc()
        out: list[Out] = [Out(t.sent, sent, sent.key)]
        out += [Out(t.audit, a, str(a.workspace_id)) for a in outcome.audit]
        if outcome.dead is not None:
            out.append(Out(t.deadletter, outcome.dead, "send"))
        if sent.status == "blocked":
            m.window_refusals.inc()
        if sent.status in ("sent", "stored"):
            if req.received_at is not None:
                m.reply_latency.observe((sent.occurred_at - req.received_at).total_seconds())
            out.append(
                Out(
                    t.usage,
                    usage(
                        req.trace_id,
                        str(req.outbound_id),
                        req.workspace_id,
                        "outbound_messages",
                        1,
                        channel_id=req.channel_id,
                    ),
                    str(req.workspace_id),
                )
            )
        return out

    stage_agent(
        app,
        name="resolve",
        topic=t.normalized,
        model=InboundMessage,
        handle=on_normalized,
        handle_batch=on_normalized_batch,
    )
    stage_agent(app, name="status", topic=t.status, model=StatusUpdate, handle=on_status)
    stage_agent(app, name="retrieve", topic=t.resolved, model=ResolvedMessage, handle=on_resolved)
    stage_agent(
        app,
        name="generate",
        topic=t.retrieved,
        model=RetrievedMessage,
        handle=on_retrieved,
        handle_batch=on_retrieved_batch,
    )
    stage_agent(
        app,
        name="reply",
        topic=t.generated,
        model=GeneratedReply,
        handle=on_generated,
        handle_batch=on_generated_batch,
    )
    # Batches in flight: a provider that hangs holds only its own batch (and at most
    # send_channel_concurrency calls); the others go on (docs/ARCHITECTURE.md, send).
    pipelined_agent(
        app,
        name="send",
        topic=t.send,
        model=SendRequest,
        handle=on_send,
        handle_batch=on_send_batch,
        in_flight=s.send_batches_in_flight,
        drain=s.send_deadline_seconds,
    )

    @app.timer(s.send_sweep_interval_seconds)
    async def requeue_deferred_sends() -> None:
        """Produce the deferred sends that are due to messages.send again, each
        conversation's in order (the stage then sends, or defers them again)."""
        try:
            due = await requeue_due(await res.pool())
            futures = [await produce.send(app, t.send, encode(r), r.key.encode()) for r in due]
            for fut in futures:
                await fut
        except Exception:  # the next tick tries again; requeued rows come back after a lease
            log.exception("send: requeueing deferred sends failed")
            return
        if due:
            m.send_requeued.inc(len(due))
