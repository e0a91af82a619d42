"""Agent on ``deadletter``: every failed record into the ``deadletters`` table, once.

The plain work (one row per failed record, the unanswered conversation flagged) is
``agents_pipeline.deadletters.keep``; this agent parses, retries transient failures
and counts. A dead letter that cannot be parsed is logged and counted: there is no
dead letter for a dead letter.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import faust
from pydantic import ValidationError

from agents_pipeline.deadletters import Kept, keep, metric_reason
from streams.contracts import DeadLetter
from streams.retry import with_retry
from streams.take import take_batches

if TYPE_CHECKING:
    from streams.app import OmnichatApp

log = logging.getLogger(__name__)

NAME = "deadletters"


def register(app: OmnichatApp) -> None:
    """Add the dead-letter keeper."""
    m = app.metrics

    @app.agent(app.topics_.deadletter, name=NAME)
    async def keep_deadletters(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, 200, within=0.05):
            m.events_in.labels(NAME).inc(len(events))
            letters: list[DeadLetter] = []
            for e in events:
                try:
                    letters.append(DeadLetter.model_validate_json(e.value))
                except ValidationError as exc:
                    log.error("unreadable dead letter dropped: %s: %r", exc, e.value[:500])
                    m.events_failed.labels(NAME).inc()
            for dead in letters:  # in order: a record's later failure after its earlier one

                async def write(dead: DeadLetter = dead) -> Kept:
                    pool = await app.resources.pool()
                    return await keep(pool, dead)

                try:
                    kept = await with_retry(NAME, write)
                except Exception:  # a bad dead letter must not stop the worker
                    log.exception("dead letter %s could not be kept", dead.event_key)
                    m.events_failed.labels(NAME).inc()
                    continue
                if kept.new:
                    m.deadletters_kept.labels(dead.stage).inc()
                if kept.flagged:
                    m.needing_attention.labels(metric_reason(dead.stage)).inc()
                    log.warning(
                        "conversation %s needs a person: %s failed (trace %s): %s",
                        kept.row["conversation_id"] if kept.row else None,
                        dead.stage,
                        dead.trace_id,
                        dead.reason,
                    )
