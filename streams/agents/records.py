"""Side topics into tables: usage per workspace and day, the workspace's stats
document for the admin views, audit events into the log.

Both tables are copied to PostgreSQL (``usage_records``, ``workspace_stats``) after
their changelog records are acknowledged, so the copy is never ahead of the
changelog; a worker whose changelogs are gone seeds the tables from it
(streams/seed.py)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import date
from typing import TYPE_CHECKING
from uuid import UUID

import faust

from agents_pipeline import stats
from storage import audit, table_state, usage
from streams import applied, tables
from streams.contracts import AuditEvent, UsageEvent
from streams.retry import with_retry
from streams.take import take_batches

if TYPE_CHECKING:
    from streams.app import OmnichatApp


def register(app: OmnichatApp, counters: faust.Table, stats_table: faust.Table) -> None:
    """Add the usage and audit agents."""
    t = app.topics_
    m = app.metrics

    @app.agent(t.usage, name="usage")
    async def count_usage(stream: faust.StreamT) -> None:
        """Add each increment to the table (key ``workspace:day:kind``), then write the day's
        totals to ``usage_records``; the table is the counter, the row its copy."""
        async for events in take_batches(stream, 500, within=0.05):
            started = time.perf_counter()
            # One changelog record per counter per batch, not one per event: the table's
            # state is the same, and a burst writes a few records instead of hundreds.
            increments: dict[tuple[int, str], int] = defaultdict(int)
            days: set[tuple[UUID, date]] = set()
            folded: dict[str, tuple[int, stats.Stats]] = {}
            # A replay after a crash brings records whose effects the tables already hold.
            new_counts = applied.fresh(counters, events)
            new_stats = {id(e) for e in applied.fresh(stats_table, events)}
            counting = {id(e) for e in new_counts}
            for e in events:
                if id(e) not in counting and id(e) not in new_stats:
                    continue
                ev = UsageEvent.model_validate_json(e.value)
                ws = str(ev.workspace_id)
                if id(e) in new_stats:
                    before = folded[ws][1] if ws in folded else stats_table.data.get(ws)
                    folded[ws] = (e.message.partition, stats.apply(before, ev))
                if ev.kind not in usage.KINDS or id(e) not in counting:
                    continue  # activity: only the stats
                key = f"{ev.workspace_id}:{ev.day.isoformat()}:{ev.kind}"
                increments[(e.message.partition, key)] += ev.amount
                days.add((ev.workspace_id, ev.day))
            logged = [
                tables.add(counters, partition, key, amount)
                for (partition, key), amount in increments.items()
            ]
            logged += [
                tables.put(stats_table, partition, ws, doc)
                for ws, (partition, doc) in folded.items()
            ]
            logged += applied.mark_applied(counters, new_counts)
            logged += applied.mark_applied(stats_table, [e for e in events if id(e) in new_stats])
            touched = {
                (ws, day): {
                    kind: int(counters.data.get(f"{ws}:{day.isoformat()}:{kind}", 0))
                    for kind in usage.KINDS
                }
                for ws, day in days
            }
            rows = [(ws, day, counts) for (ws, day), counts in touched.items()]
            docs = [(UUID(ws), doc, stats.folded(doc)) for ws, (_, doc) in folded.items()]
            # The changelog first: the copy in PostgreSQL must never hold what the changelog
            # could still lose, or a worker seeding from it (streams/seed.py) and then
            # replaying the batch would count it twice.
            await asyncio.gather(*logged)

            async def write(rows: list = rows, docs: list = docs) -> None:
                pool = await app.resources.pool()
                async with pool.connection() as conn:
                    await usage.set_usage(conn, rows)
                    await table_state.set_stats(conn, docs)

            await with_retry("usage", write)
            m.events_in.labels("usage").inc(len(events))
            m.stage_latency.labels("usage").observe(time.perf_counter() - started)

    @app.agent(t.audit, name="audit")
    async def write_audit(stream: faust.StreamT) -> None:
        """Audit events from the stages into ``audit_log`` (their event key makes it once)."""
        async for events in take_batches(stream, 200, within=0.05):
            evs = [AuditEvent.model_validate_json(e.value) for e in events]

            async def write(evs: list[AuditEvent] = evs) -> None:
                pool = await app.resources.pool()
                async with pool.connection() as conn:
                    for ev in evs:
                        await audit.write_audit(
                            conn,
                            workspace_id=ev.workspace_id,
                            actor=ev.actor,
                            action=ev.action,
                            object_type=ev.object_type,
                            object_id=ev.object_id,
                            details=ev.details,
                            event_key=ev.event_key,
                        )

            await with_retry("audit", write)
            m.events_in.labels("audit").inc(len(events))
