"""Agent on ``webhooks.raw``: dedupe per provider item, persist, forward canonical events.

A stage like the others (``stage_agent``): a batch is one ``webhook_events`` statement,
one round of produces and one "forwarded" statement; a batch that fails for anything but
a transient error goes through the same steps one record at a time, so that a record
PostgreSQL refuses is the only one dead-lettered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import faust

from agents_pipeline import normalize as stage
from streams import produce, tables
from streams.agents.stage import Out, stage_agent
from streams.contracts import InboundMessage
from streams.topology import encode

if TYPE_CHECKING:
    from streams.app import OmnichatApp

log = logging.getLogger(__name__)

BATCH = 500
WITHIN = 0.01  # seconds a batch waits for more records


def raw_record(e: faust.EventT) -> stage.RawRecord:
    """A ``webhooks.raw`` record as normalize reads it: body, headers and partition."""
    return stage.RawRecord(e.message.headers, e.value, e.message.partition)


def register(app: OmnichatApp, dedupe: faust.Table) -> None:
    """Add the normalize agent to the app."""
    topics = app.topics_
    m = app.metrics

    async def process(records: list[stage.RawRecord]) -> list[list[Out]]:
        """Persist, forward and mark a batch; its unreadable records' dead letters, each
        with its record, for the stage to send."""
        pool = await app.resources.pool()
        result = stage.plan_batch(records, seen=lambda k: dedupe.get(k, 0) > 0)
        await stage.persist_batch(pool, result)
        # Events and item dead letters are on their topics before the rows say "forwarded".
        futures: list[Any] = []
        for p in result.forward:
            if p.dead is not None:
                futures.append(await produce.send(app, topics.deadletter, encode(p.dead)))
            for ev in p.events:
                topic = topics.normalized if isinstance(ev, InboundMessage) else topics.status
                futures.append(await produce.send(app, topic, encode(ev), ev.key.encode()))
        for fut in futures:
            await fut
        await stage.mark_batch_forwarded(pool, result)
        for record, keys in zip(records, result.keys_by_record, strict=True):
            for key in keys:
                tables.put(dedupe, record.partition, key, 1)
        m.events_failed.labels("normalize").inc(sum(1 for p in result.forward if p.dead))
        m.dedupe_hits.labels("normalize").inc(result.duplicates)
        m.events_out.labels("normalize").inc(sum(len(p.events) for p in result.forward))
        return [
            [Out(topics.deadletter, dead)] if dead is not None else []
            for dead in result.dead_by_record
        ]

    async def one(record: stage.RawRecord) -> list[Out]:
        return (await process([record]))[0]

    stage_agent(
        app,
        name="normalize",
        topic=topics.webhooks_raw,
        parse=raw_record,
        handle=one,
        handle_batch=process,
        batch=BATCH,
        within=WITHIN,
    )
