"""Side topics into tables: usage counted per workspace and day, audit events into the log."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import date
from typing import TYPE_CHECKING
from uuid import UUID

import faust

from storage import audit, usage
from streams import tables
from streams.contracts import AuditEvent, UsageEvent
from streams.retry import with_retry
from streams.take import take_batches

if TYPE_CHECKING:
    from streams.app import OmnichatApp


def register(app: OmnichatApp, counters: faust.Table) -> None:
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
            for e in events:
                ev = UsageEvent.model_validate_json(e.value)
                key = f"{ev.workspace_id}:{ev.day.isoformat()}:{ev.kind}"
                increments[(e.message.partition, key)] += ev.amount
                days.add((ev.workspace_id, ev.day))
            for (partition, key), amount in increments.items():
                tables.add(counters, partition, key, amount)
            touched = {
                (ws, day): {
                    kind: int(counters.data.get(f"{ws}:{day.isoformat()}:{kind}", 0))
                    for kind in usage.KINDS
                }
                for ws, day in days
            }
            rows = [(ws, day, counts) for (ws, day), counts in touched.items()]

            async def write(rows: list = rows) -> None:
                pool = await app.resources.pool()
                async with pool.connection() as conn:
                    await usage.set_usage(conn, rows)

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
