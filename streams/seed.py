"""Seeding the tables that mirror PostgreSQL after their recovery, before the agents run.

A worker rebuilds its tables from their changelog topics when it starts or takes over
partitions. The embedded broker (Tansu) keeps nothing across a restart, so after one the
changelogs are empty and every counter would start from zero: a workspace's quota
again, the admin views showing nothing. PostgreSQL holds the same figures:

- ``usage-counters`` (``workspace:day:kind``) — ``usage_records``, which the usage agent
  writes from the table;
- ``workspace-stats`` (one document per workspace) — ``workspace_stats``, likewise;
- ``quota-counters`` (``workspace:month:inbound_answered`` and ``:llm_tokens``) —
  ``agent_runs``: one run per message that reached the agent, refusals included, with the
  tokens of its LLM call.

So after every recovery, for the workspaces of the partitions this worker now owns, each
entry is raised to the database's figure when that is higher; it is never lowered. This
is exact because the database's copy is never ahead of what the stream would count again:
the usage agent writes PostgreSQL only after its changelog records are acknowledged
(streams/agents/records.py), so a batch that the changelog lost is not in the copy either
and its replay counts it once; and generate never counts a message that already has its
run (a replay finds the run and skips it). An intact changelog is at least the database's
copy, so raising changes nothing there: there is no need to tell "lost" from "behind".

The hook runs from Faust's recovery (``Table.on_recover``), which awaits it before it
resumes the stream partitions, so no agent handles a record of those partitions before
their entries are seeded; the admin views answer 503 until the rebalance has ended.
With several workers, each seeds the workspaces of its own partitions.

``webhook-dedupe`` is not seeded: ``webhook_events`` has UNIQUE (workspace_id,
idempotency_key) and normalize drops a row's item that was forwarded already, so a lost
dedupe table costs one insert per repeat, never a second message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agents_pipeline import stats
from agents_pipeline.quota import INBOUND_SEEN, TOKENS, counter_key, month_of
from storage import table_state, usage
from storage.db import Conn
from streams.partitions import workspace_partition
from streams.retry import TRANSIENT

if TYPE_CHECKING:
    from streams.app import OmnichatApp, Tables

log = logging.getLogger(__name__)


@dataclass
class Mirror:
    """What PostgreSQL holds for some workspaces, keyed as the tables are."""

    usage: dict[str, int] = field(default_factory=dict)
    quota: dict[str, int] = field(default_factory=dict)
    stats: dict[str, stats.Stats] = field(default_factory=dict)


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The UTC month of ``now``: its first instant and the next month's."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


async def read_mirror(conn: Conn, workspace_ids: list[UUID], now: datetime) -> Mirror:
    """The database's figures for these workspaces (the quota for ``now``'s month)."""
    out = Mirror()
    if not workspace_ids:
        return out
    for row in await table_state.usage_days(conn, workspace_ids=workspace_ids):
        for kind in usage.KINDS:
            if row[kind]:
                out.usage[f"{row['workspace_id']}:{row['day'].isoformat()}:{kind}"] = int(row[kind])
    start, end = month_bounds(now)
    month = month_of(start)
    runs = await table_state.month_runs(conn, workspace_ids=workspace_ids, start=start, end=end)
    for ws, (answered, tokens) in runs.items():
        out.quota[counter_key(ws, month, INBOUND_SEEN)] = answered
        if tokens:
            out.quota[counter_key(ws, month, TOKENS)] = tokens
    docs = await table_state.stats_docs(conn, workspace_ids=workspace_ids)
    out.stats = {str(ws): doc for ws, doc in docs.items()}
    return out


def raise_counters(data: MutableMapping[str, Any], figures: dict[str, int]) -> int:
    """Raise each counter to its figure where that is higher; how many were raised."""
    raised = 0
    for key, value in figures.items():
        if value > int(data.get(key, 0)):
            data[key] = value
            raised += 1
    return raised


def raise_stats(data: MutableMapping[str, Any], docs: dict[str, stats.Stats]) -> int:
    """Merge each workspace's stored document into the table's; how many changed."""
    raised = 0
    for ws, doc in docs.items():
        merged = stats.merge(data.get(ws), doc)
        if merged != data.get(ws):
            data[ws] = merged
            raised += 1
    return raised


def owned(workspace_ids: Iterable[UUID], partitions: set[int], count: int) -> list[UUID]:
    """The workspaces whose partition (among ``count``) is one of ``partitions``."""
    return [w for w in workspace_ids if workspace_partition(w, count) in partitions]


async def seed_tables(app: OmnichatApp, tables: Tables) -> None:
    """Raise the mirrored tables' entries of this worker's partitions to PostgreSQL's figures.

    Retries while the database is away (the partitions stay paused meanwhile: nothing may
    count from zero), and gives up only when another rebalance has started, whose own
    recovery seeds again.
    """
    changelog = tables.stats.changelog_topic.get_topic_name()
    partitions = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog}
    if not partitions:
        return
    generation = app.consumer_generation_id
    delay = 0.2
    while True:
        try:
            pool = await app.resources.pool()
            async with pool.connection() as conn:
                mine = owned(
                    await table_state.workspace_ids(conn), partitions, app.settings.topic_partitions
                )
                mirror = await read_mirror(conn, mine, datetime.now(UTC))
            break
        except TRANSIENT as exc:
            if app.consumer_generation_id != generation:
                log.info("seeding abandoned: another rebalance started (it seeds again)")
                return
            log.warning("seeding the tables: database away, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)
    raised = {
        "usage-counters": raise_counters(tables.usage.data, mirror.usage),
        "quota-counters": raise_counters(tables.quota.data, mirror.quota),
        "workspace-stats": raise_stats(tables.stats.data, mirror.stats),
    }
    for name, n in raised.items():
        app.metrics.table_seeds.labels(name).inc(n)
    log.info(
        "tables seeded from PostgreSQL for %d workspaces on partitions %s: raised %s",
        len(mine),
        sorted(partitions),
        ", ".join(f"{n} {name}" for name, n in raised.items()),
    )
