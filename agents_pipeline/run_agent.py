"""generate (with the database): prompt from the agent version and history, one run per message.

The LLM logic itself is ``agents_pipeline.generate.generate_reply`` (no I/O but
the LLM). This module loads what it needs and records the ``agent_runs`` row.
A message that already has a run reuses it: a retried stage never calls the
model twice nor answers with a different text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from psycopg_pool import AsyncConnectionPool

from agents_pipeline.generate import generate_reply, quota_refusal
from agents_pipeline.llm import (
    OFFLINE_MODEL,
    AgentSpec,
    GenerationResult,
    HistoryTurn,
    LLMClient,
    fallback_reply,
)
from agents_pipeline.lookups import READ_THROUGH, Lookups
from agents_pipeline.quota import Limits, Permit, QuotaGate, month_of
from storage import messages, runs
from streams.contracts import GeneratedReply, RetrievedChunk, RetrievedMessage


@dataclass
class AgentRun:
    """The reply and whether this call created the run (usage counts it once)."""

    reply: GeneratedReply
    created: bool
    result: GenerationResult | None
    refusal: Permit | None = None


def _history(rows: list[dict]) -> list[HistoryTurn]:
    return [
        HistoryTurn(role="user" if r["direction"] == "in" else "assistant", text=r["text"])
        for r in rows
    ]


async def run_agent(
    pool: AsyncConnectionPool,
    msg: RetrievedMessage,
    *,
    llm: LLMClient | None,
    default_model: str,
    lookups: Lookups = READ_THROUGH,
    gate: QuotaGate | None = None,
    now: datetime | None = None,
) -> AgentRun:
    """Answer one message (or return the answer it already has).

    With a ``gate``, the workspace's monthly limits apply: past them the reply is
    the workspace's fallback text and no LLM call is made (``refusal`` says why).
    """
    async with pool.connection() as conn:
        existing = await runs.get_run_for_message(conn, message_id=msg.message_id)
        if existing is not None:
            return AgentRun(_reply(msg, existing), created=False, result=None)
        version = await lookups.version(conn, msg.workspace_id, msg.agent_id, msg.agent_version_id)
        workspace = await lookups.workspace(conn, msg.workspace_id)
        history = await messages.history(
            conn,
            workspace_id=msg.workspace_id,
            conversation_id=msg.conversation_id,
            before_message=msg.message_id,
        )
        limits = Limits.from_row(await lookups.limits(conn, msg.workspace_id)) if gate else None
    assert version is not None, "a published version is immutable and never deleted alone"
    spec = AgentSpec(
        system_prompt=version["system_prompt"],
        model=version["model"],
        temperature=version["temperature"],
        max_tokens=version["max_tokens"],
        history_tokens=version["history_tokens"],
        fallback_text=version["fallback_text"] or (workspace or {}).get("fallback_text"),
    )
    # A version whose model is "offline" answers with the deterministic responder even where
    # an LLM is configured: an FAQ bot that quotes the knowledge base, at no cost.
    use_llm = None if version["model"] == OFFLINE_MODEL else llm
    quota_text = (workspace or {}).get("fallback_text") or spec.fallback_text
    refusal: Permit | None = None
    admit = None
    if gate is not None and limits is not None:
        month = month_of(now or datetime.now(UTC))
        refusal = gate.inbound_refusal(msg.workspace_id, limits, month, msg.message_id)
        admit = partial(gate.llm_call, msg.workspace_id, limits, month)
    if refusal is not None:
        result = quota_refusal(
            refusal, spec.model or default_model, fallback_reply(quota_text, msg.text or "")
        )
    else:
        result = await generate_reply(
            agent=spec,
            user_text=msg.text or "",
            history=_history(history),
            chunks=msg.chunks,
            llm=use_llm,
            default_model=default_model,
            admit=admit if use_llm is not None else None,
            quota_fallback=quota_text,
        )
        if result.outcome == "quota_exceeded":
            refusal = Permit(refused="llm_tokens")
    async with pool.connection() as conn:
        row, created = await runs.insert_run(
            conn,
            {
                "workspace_id": msg.workspace_id,
                "agent_id": msg.agent_id,
                "version_id": msg.agent_version_id,
                "conversation_id": msg.conversation_id,
                "message_id": msg.message_id,
                "model": result.model,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "latency_ms": result.latency_ms,
                "cost_usd": result.cost_usd,
                "sources": [s.model_dump(mode="json") for s in result.sources],
                "outcome": result.outcome,
                "error": result.error,
                "reply_text": result.reply_text,
                "trace_id": msg.trace_id,
            },
        )
    return AgentRun(
        _reply(msg, row),
        created=created,
        result=result if created else None,
        refusal=refusal if created else None,
    )


def _reply(msg: RetrievedMessage, run: dict) -> GeneratedReply:
    return GeneratedReply(
        **msg.model_dump(exclude={"chunks"}),
        run_id=run["id"],
        reply_text=run["reply_text"] or "",
        sources=[RetrievedChunk.model_validate(s) for s in run["sources"]],
    )
