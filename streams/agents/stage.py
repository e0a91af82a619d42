"""The shape every stage agent shares: batch, parse, handle per conversation, send on.

A stage is a plain async ``handle(event) -> list[Out]``. This module runs it over
batches of one topic with the guarantees the pipeline needs:

- events of one key (one conversation) are handled in order, one after another;
  different keys run concurrently (bounded), so a slow LLM call for one
  conversation does not hold up the others in the batch;
- transient failures (database or broker away) are retried with backoff, so no
  event is skipped; an event that cannot be parsed, or whose handler raises
  anything else, goes to ``deadletter`` with the reason, and the worker goes on;
- the outputs are acknowledged by the broker before the batch is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import faust
from pydantic import BaseModel, ValidationError

from streams.contracts import DeadLetter
from streams.retry import TRANSIENT, with_retry
from streams.topology import encode

if TYPE_CHECKING:
    from streams.app import OmnichatApp

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Out:
    """One record a handler wants sent."""

    topic: faust.TopicT
    value: BaseModel
    key: str | None = None
    partition: int | None = None  # None: the key's partition (see streams/partitions.py)


Handler = Callable[[Any], Awaitable[list[Out]]]


def _dead(stage: str, reason: str, code: str, raw: bytes, parsed: BaseModel | None) -> DeadLetter:
    return DeadLetter(
        trace_id=getattr(parsed, "trace_id", None) or "unknown",
        stage=stage,
        reason=reason,
        error_code=code,
        workspace_id=getattr(parsed, "workspace_id", None),
        channel_id=getattr(parsed, "channel_id", None),
        payload=raw.decode("utf-8", "replace")[:65536],
    )


async def _handle_one(
    app: OmnichatApp, stage: str, handle: Handler, raw: bytes, model: type[M]
) -> list[Out]:
    try:
        event = model.model_validate_json(raw)
    except ValidationError as exc:
        return [
            Out(
                app.topics_.deadletter,
                _dead(stage, f"invalid {model.__name__}: {exc}", "invalid_event", raw, None),
            )
        ]
    try:
        return await with_retry(stage, lambda: handle(event))
    except TRANSIENT:
        raise
    except Exception as exc:  # a bad event must not stop the worker
        log.exception("%s: event failed, dead-lettered (trace %s)", stage, event.trace_id)
        return [
            Out(
                app.topics_.deadletter,
                _dead(stage, f"{type(exc).__name__}: {exc}", "internal_error", raw, event),
            )
        ]


def stage_agent(
    app: OmnichatApp,
    *,
    name: str,
    topic: faust.TopicT,
    model: type[M],
    handle: Handler,
    batch: int = 200,
    within: float = 0.005,
    concurrency: int = 16,
) -> None:
    """Register an agent that runs ``handle`` over ``topic`` as described above."""
    m = app.metrics
    limit = asyncio.Semaphore(concurrency)

    async def run_key(raws: list[bytes]) -> list[Out]:
        out: list[Out] = []
        async with limit:
            for raw in raws:
                out += await _handle_one(app, name, handle, raw, model)
        return out

    @app.agent(topic, name=name)
    async def agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(batch, within=within):
            started = time.perf_counter()
            m.events_in.labels(name).inc(len(events))
            groups: dict[bytes | None, list[bytes]] = {}
            for e in events:
                groups.setdefault(e.key, []).append(e.value)
            results = await asyncio.gather(*(run_key(raws) for raws in groups.values()))
            futures = []
            for outs in results:
                for o in outs:
                    key = o.key.encode() if o.key is not None else None
                    futures.append(
                        await o.topic.send(key=key, value=encode(o.value), partition=o.partition)
                    )
                    if o.topic is app.topics_.deadletter:
                        m.events_failed.labels(name).inc()
                    else:
                        m.events_out.labels(name).inc()
            for fut in futures:
                await fut
            m.stage_latency.labels(name).observe(time.perf_counter() - started)
