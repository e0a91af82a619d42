"""generate (with the database): prompt from the agent version and history, one run per message.

The LLM logic itself is ``agents_pipeline.generate.generate_reply`` (no I/O but
the LLM). This module loads what it needs and records the ``agent_runs`` row.
A message that already has a run reuses it: a retried stage never calls the
model twice nor answers with a different text.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from agents_pipeline.generate import Admit, generate_reply, quota_refusal
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


class Unreported:
    """Runs that made an LLM call, were recorded, and whose events were not handed on yet.

    ``run_agents`` records each such run as soon as its call returns. When the rest of
    the batch then fails, its retry (or the one-by-one fallback) finds the run stored;
    it takes the run from here to still hand on its usage and audit events, once.
    """

    KEPT = 10_000  # a run is taken within its batch; this only bounds a worker that stopped

    def __init__(self) -> None:
        self._runs: OrderedDict[UUID, AgentRun] = OrderedDict()

    def keep(self, run: AgentRun) -> None:
        """Remember a run this worker created and has not reported."""
        self._runs[run.reply.message_id] = run
        while len(self._runs) > self.KEPT:
            self._runs.popitem(last=False)

    def take(self, message_id: UUID) -> AgentRun | None:
        """The unreported run of a message, forgotten as it is reported."""
        return self._runs.pop(message_id, None)


def _history(rows: list[dict]) -> list[HistoryTurn]:
    return [
        HistoryTurn(role="user" if r["direction"] == "in" else "assistant", text=r["text"])
        for r in rows
    ]


@dataclass
class Plan:
    """How one message is answered: the version's settings, the client (None: offline) and
    the quota's decisions, taken before any LLM call."""

    spec: AgentSpec
    llm: LLMClient | None
    quota_text: str | None
    refusal: Permit | None
    admit: Admit | None

    def calls_llm(self, msg: RetrievedMessage) -> bool:
        """Whether answering makes an LLM call (a slow one that records its own run)."""
        return self.refusal is None and self.llm is not None and bool((msg.text or "").strip())


def plan(
    msg: RetrievedMessage,
    *,
    version: dict | None,
    workspace: dict | None,
    limits: Limits | None,
    gate: QuotaGate | None,
    llm: LLMClient | None,
    now: datetime | None,
) -> Plan:
    """The plan of a message; with a ``gate`` this counts it against the inbound limit."""
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
    return Plan(spec, use_llm, quota_text, refusal, admit if use_llm is not None else None)


async def answer(
    msg: RetrievedMessage, p: Plan, history: list[dict], *, default_model: str
) -> tuple[GenerationResult, Permit | None]:
    """The result for a planned message and the quota refusal behind it, if any."""
    if p.refusal is not None:
        reply = fallback_reply(p.quota_text, msg.text or "")
        return quota_refusal(p.refusal, p.spec.model or default_model, reply), p.refusal
    result = await generate_reply(
        agent=p.spec,
        user_text=msg.text or "",
        history=_history(history),
        chunks=msg.chunks,
        llm=p.llm,
        default_model=default_model,
        admit=p.admit,
        quota_fallback=p.quota_text,
    )
    if result.outcome == "quota_exceeded":
        return result, Permit(refused="llm_tokens")
    return result, None


def run_row(msg: RetrievedMessage, result: GenerationResult) -> dict[str, Any]:
    """The ``agent_runs`` row of a result."""
    return {
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
        "retrieval_error": msg.retrieval_error,
    }


def recorded(
    msg: RetrievedMessage,
    row: dict,
    created: bool,
    result: GenerationResult,
    refusal: Permit | None,
) -> AgentRun:
    """The run as stored: this call's result only when it created the row."""
    return AgentRun(
        reply_for(msg, row),
        created=created,
        result=result if created else None,
        refusal=refusal if created else None,
    )


async def run_agent(
    pool: AsyncConnectionPool,
    msg: RetrievedMessage,
    *,
    llm: LLMClient | None,
    default_model: str,
    lookups: Lookups = READ_THROUGH,
    gate: QuotaGate | None = None,
    now: datetime | None = None,
    unreported: Unreported | None = None,
) -> AgentRun:
    """Answer one message (or return the answer it already has).

    With a ``gate``, the workspace's monthly limits apply: past them the reply is
    the workspace's fallback text and no LLM call is made (``refusal`` says why).
    """
    async with pool.connection() as conn:
        existing = await runs.get_run_for_message(conn, message_id=msg.message_id)
        if existing is not None:
            kept = unreported.take(msg.message_id) if unreported else None
            return kept or AgentRun(reply_for(msg, existing), created=False, result=None)
        version = await lookups.version(conn, msg.workspace_id, msg.agent_id, msg.agent_version_id)
        workspace = await lookups.workspace(conn, msg.workspace_id)
        history = await messages.history(
            conn,
            workspace_id=msg.workspace_id,
            conversation_id=msg.conversation_id,
            before_message=msg.message_id,
        )
        limits = Limits.from_row(await lookups.limits(conn, msg.workspace_id)) if gate else None
    p = plan(msg, version=version, workspace=workspace, limits=limits, gate=gate, llm=llm, now=now)
    result, refusal = await answer(msg, p, history, default_model=default_model)
    async with pool.connection() as conn:
        row, created = await runs.insert_run(conn, run_row(msg, result))
    return recorded(msg, row, created, result, refusal)


def reply_for(msg: RetrievedMessage, run: dict) -> GeneratedReply:
    """The reply event of a message's run."""
    return GeneratedReply(
        **msg.model_dump(exclude={"chunks", "retrieval_error"}),
        run_id=run["id"],
        reply_text=run["reply_text"] or "",
        sources=[RetrievedChunk.model_validate(s) for s in run["sources"]],
    )
