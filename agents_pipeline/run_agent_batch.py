"""generate for a whole stream batch: ``run_agent``'s decisions with a few statements per batch.

``run_agent`` costs four round trips per message (existing run, history, insert and
its commit). Here the existing runs and every message's history are one statement each
for the batch, and the runs that need no LLM call (the offline responder, quota
refusals, nothing to answer) are inserted together at the end, in the batch's order.

A run that calls the LLM is still recorded by itself right after its call, as
``run_agent`` does: a call costs money and counts against the quota, so a retried or
crashed batch must find its run and never call twice, however long the batch took.
Those calls run per conversation in order, conversations concurrently (bounded), as
the stage runs one message at a time.

Quota decisions are taken in the batch's order, which is each conversation's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from agents_pipeline.llm import LLMClient
from agents_pipeline.lookups import READ_THROUGH, Lookups
from agents_pipeline.quota import Limits, QuotaGate
from agents_pipeline.run_agent import (
    AgentRun,
    Plan,
    Unreported,
    answer,
    plan,
    recorded,
    reply_for,
    run_row,
)
from storage import bulk, runs
from streams.contracts import RetrievedMessage


async def run_agents(
    pool: AsyncConnectionPool,
    msgs: Sequence[RetrievedMessage],
    *,
    llm: LLMClient | None,
    default_model: str,
    lookups: Lookups = READ_THROUGH,
    gate: QuotaGate | None = None,
    now: datetime | None = None,
    unreported: Unreported | None = None,
    concurrency: int = 16,
) -> list[AgentRun]:
    """``run_agent`` for each message; one run per message, in order. A message given twice
    is answered once (the second copy reuses the run, as a replay would).

    ``unreported`` keeps the LLM runs recorded by an attempt that then failed, so that the
    retry still reports them as created (see ``run_agent.Unreported``)."""
    kept = unreported or Unreported()
    first: dict[UUID, int] = {}
    for i, m in enumerate(msgs):
        first.setdefault(m.message_id, i)
    todo: list[int] = []
    plans: dict[int, Plan] = {}
    async with pool.connection() as conn:
        existing = await bulk.runs_for_messages(
            conn, [(msgs[i].workspace_id, msgs[i].message_id) for i in first.values()]
        )
        todo = [i for i in first.values() if msgs[i].message_id not in existing]
        history = await bulk.histories(
            conn,
            [(msgs[i].workspace_id, msgs[i].conversation_id, msgs[i].message_id) for i in todo],
        )
        for i in todo:  # in order: the inbound quota counts the messages in order
            m = msgs[i]
            limits = Limits.from_row(await lookups.limits(conn, m.workspace_id)) if gate else None
            plans[i] = plan(
                m,
                version=await lookups.version(conn, m.workspace_id, m.agent_id, m.agent_version_id),
                workspace=await lookups.workspace(conn, m.workspace_id),
                limits=limits,
                gate=gate,
                llm=llm,
                now=now,
            )
    histories = dict(zip(todo, history, strict=True))
    done: dict[UUID, AgentRun] = {}

    async def call(i: int) -> None:
        """An LLM answer, recorded at once (see the module doc)."""
        m = msgs[i]
        result, refusal = await answer(m, plans[i], histories[i], default_model=default_model)
        async with pool.connection() as conn:
            row, created = await runs.insert_run(conn, run_row(m, result))
        run = recorded(m, row, created, result, refusal)
        if created:
            kept.keep(run)
        done[m.message_id] = run

    calls = [i for i in todo if plans[i].calls_llm(msgs[i])]
    await _per_conversation(calls, lambda i: msgs[i].key, call, concurrency)
    quick = [i for i in todo if not plans[i].calls_llm(msgs[i])]
    results = [
        await answer(msgs[i], plans[i], histories[i], default_model=default_model) for i in quick
    ]
    if quick:
        async with pool.connection() as conn:
            stored = await bulk.insert_runs(
                conn, [run_row(msgs[i], r) for i, (r, _) in zip(quick, results, strict=True)]
            )
        for i, (result, refusal) in zip(quick, results, strict=True):
            m = msgs[i]
            row, created = stored[m.message_id]
            done[m.message_id] = recorded(m, row, created, result, refusal)
    out: list[AgentRun] = []
    for i, m in enumerate(msgs):
        run = None
        if first[m.message_id] == i:  # reported now: no retry may report it again
            run = kept.take(m.message_id) or done.get(m.message_id)
        if run is not None:
            out.append(run)
        else:  # answered before this batch, or a second copy in it
            row = existing.get(m.message_id) or _row_of(done[m.message_id])
            out.append(AgentRun(reply_for(m, row), created=False, result=None))
    return out


def _row_of(run: AgentRun) -> dict:
    """The fields ``reply_for`` reads, from a run made in this batch."""
    return {
        "id": run.reply.run_id,
        "reply_text": run.reply.reply_text,
        "sources": [s.model_dump(mode="json") for s in run.reply.sources],
    }


async def _per_conversation(
    items: list[int],
    key: Callable[[int], str],
    work: Callable[[int], Awaitable[None]],
    concurrency: int,
) -> None:
    """Run ``work`` over items, each conversation's in order, conversations concurrently."""
    groups: dict[str, list[int]] = {}
    for i in items:
        groups.setdefault(key(i), []).append(i)
    todo = iter(list(groups.values()))

    async def runner() -> None:
        for group in todo:
            for i in group:
                await work(i)

    await asyncio.gather(*(runner() for _ in range(min(concurrency, len(groups)))))
