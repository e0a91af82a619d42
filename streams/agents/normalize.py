"""Agent on ``webhooks.raw``: dedupe per provider item, persist, forward canonical events."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import faust

from agents_pipeline import normalize as stage
from streams import produce, tables
from streams.contracts import DeadLetter, InboundMessage
from streams.retry import with_retry
from streams.take import take_batches
from streams.topology import encode

if TYPE_CHECKING:
    from streams.app import OmnichatApp

log = logging.getLogger(__name__)

BATCH = 500
WITHIN = 0.01  # seconds a batch waits for more records


def register(app: OmnichatApp, dedupe: faust.Table) -> None:
    """Add the normalize agent to the app."""
    topics = app.topics_
    m = app.metrics

    async def process(events: list[Any]) -> stage.BatchResult:
        pool = await app.resources.pool()
        records = [stage.RawRecord(e.message.headers, e.value) for e in events]
        result = stage.plan_batch(records, seen=lambda k: dedupe.get(k, 0) > 0)
        await stage.persist_batch(pool, result)
        futures = []
        for p in result.forward:
            if p.dead is not None:
                futures.append(await produce.send(app, topics.deadletter, encode(p.dead)))
            for ev in p.events:
                topic = topics.normalized if isinstance(ev, InboundMessage) else topics.status
                futures.append(await produce.send(app, topic, encode(ev), ev.key.encode()))
        futures += [await produce.send(app, topics.deadletter, encode(d)) for d in result.dead]
        for fut in futures:
            await fut  # on the topics before the rows say "forwarded"
        await stage.mark_batch_forwarded(pool, result)
        return result

    @app.agent(topics.webhooks_raw, name="normalize")
    async def normalize(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, BATCH, within=WITHIN):
            started = time.perf_counter()
            m.events_in.labels("normalize").inc(len(events))
            try:
                result = await with_retry("normalize", lambda ev=events: process(ev))
            except Exception as exc:
                log.exception("normalize: batch failed; dead-lettering its records")
                for e in events:
                    dead = DeadLetter(
                        trace_id="unknown",
                        stage="normalize",
                        reason=f"internal error: {type(exc).__name__}: {exc}",
                        error_code="internal_error",
                        payload=e.value.decode("utf-8", "replace")[:65536],
                    )
                    await topics.deadletter.send(value=encode(dead))
                m.events_failed.labels("normalize").inc(len(events))
                continue
            for e, keys in zip(events, result.keys_by_record, strict=True):
                for key in keys:
                    tables.put(dedupe, e.message.partition, key, 1)
            failed = len(result.dead) + sum(1 for p in result.forward if p.dead)
            m.events_failed.labels("normalize").inc(failed)
            m.dedupe_hits.labels("normalize").inc(result.duplicates)
            m.events_out.labels("normalize").inc(sum(len(p.events) for p in result.forward))
            m.stage_latency.labels("normalize").observe(time.perf_counter() - started)
