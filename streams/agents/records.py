"""Side topics into tables: usage per workspace and day, the workspace's stats
document for the admin views, audit events into the log.

As in every stage, a record that cannot be read, or that PostgreSQL refuses, is
dead-lettered alone: the audit agent is a ``stage_agent`` (a failing batch is written
one event at a time), and the usage agent writes its rows one by one when the batch's
write fails.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import date
from typing import TYPE_CHECKING
from uuid import UUID

import faust
from pydantic import ValidationError

from agents_pipeline import stats
from storage import audit, usage
from storage.db import Conn
from streams import applied, tables
from streams.agents.stage import Out, send_outs, stage_agent
from streams.contracts import AuditEvent, DeadLetter, UsageEvent
from streams.retry import with_retry
from streams.take import take_batches

if TYPE_CHECKING:
    from streams.app import OmnichatApp

log = logging.getLogger(__name__)

UsageRow = tuple[UUID, date, dict[str, int]]  # a workspace's day: totals per kind


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
            dead: list[Out] = []
            for e in events:
                if id(e) not in counting and id(e) not in new_stats:
                    continue
                try:
                    ev = UsageEvent.model_validate_json(e.value)
                except ValidationError as exc:  # not an increment: it counts for nothing
                    dead.append(
                        Out(
                            t.deadletter,
                            DeadLetter(
                                trace_id="unknown",
                                stage="usage",
                                reason=f"invalid UsageEvent: {exc}",
                                error_code="invalid_event",
                                payload=e.value.decode("utf-8", "replace")[:65536],
                            ),
                        )
                    )
                    continue
                ws = str(ev.workspace_id)
                if id(e) in new_stats:
                    before = folded[ws][1] if ws in folded else stats_table.data.get(ws)
                    folded[ws] = (e.message.partition, stats.apply(before, ev))
                if ev.kind not in usage.KINDS or id(e) not in counting:
                    continue  # activity: only the stats
                key = f"{ev.workspace_id}:{ev.day.isoformat()}:{ev.kind}"
                increments[(e.message.partition, key)] += ev.amount
                days.add((ev.workspace_id, ev.day))
            for (partition, key), amount in increments.items():
                tables.add(counters, partition, key, amount)
            for ws, (partition, doc) in folded.items():
                tables.put(stats_table, partition, ws, doc)
            applied.mark_applied(counters, new_counts)
            applied.mark_applied(stats_table, [e for e in events if id(e) in new_stats])
            touched = {
                (ws, day): {
                    kind: int(counters.data.get(f"{ws}:{day.isoformat()}:{kind}", 0))
                    for kind in usage.KINDS
                }
                for ws, day in days
            }
            rows = [(ws, day, counts) for (ws, day), counts in touched.items()]
            dead += await write_usage(rows)
            await send_outs(app, "usage", dead)
            m.events_in.labels("usage").inc(len(events))
            m.stage_latency.labels("usage").observe(time.perf_counter() - started)

    async def write_usage(rows: list[UsageRow]) -> list[Out]:
        """Write the rows in one go; if PostgreSQL refuses one (a total out of range), row by
        row, so that only that workspace's day is dead-lettered (the table keeps counting)."""

        async def write(rows: list[UsageRow]) -> None:
            pool = await app.resources.pool()
            async with pool.connection() as conn:
                await usage.set_usage(conn, rows)

        try:
            await with_retry("usage", lambda: write(rows))
            return []
        except Exception:  # not transient: with_retry retries those
            log.exception("usage: writing %d rows failed; writing them one by one", len(rows))
        dead: list[Out] = []
        for row in rows:
            try:
                await with_retry("usage", lambda row=row: write([row]))
            except Exception as exc:
                log.exception("usage: the row of %s on %s was refused", row[0], row[1])
                doc = {"workspace_id": str(row[0]), "day": row[1].isoformat(), "counts": row[2]}
                dead.append(
                    Out(
                        t.deadletter,
                        DeadLetter(
                            trace_id="unknown",
                            stage="usage",
                            reason=f"{type(exc).__name__}: {exc}",
                            error_code="data_error",
                            workspace_id=row[0],
                            payload=doc,
                        ),
                    )
                )
        return dead

    async def write_audit(ev: AuditEvent) -> list[Out]:
        pool = await app.resources.pool()
        async with pool.connection() as conn:
            await _write_audit(conn, ev)
        return []

    async def write_audits(evs: list[AuditEvent]) -> list[list[Out]]:
        pool = await app.resources.pool()
        async with pool.connection() as conn:  # one transaction: all of them or none
            for ev in evs:
                await _write_audit(conn, ev)
        return [[] for _ in evs]

    # Audit events from the stages into ``audit_log`` (their event key makes it once).
    stage_agent(
        app,
        name="audit",
        topic=t.audit,
        model=AuditEvent,
        handle=write_audit,
        handle_batch=write_audits,
        batch=200,
        within=0.05,
    )


async def _write_audit(conn: Conn, ev: AuditEvent) -> None:
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
