"""The shape every stage agent shares: batch, parse, handle per conversation, send on.

A stage is a plain async ``handle(event) -> list[Out]``, and optionally a
``handle_batch(events) -> list[list[Out]]`` that does the same for a whole batch
with a few multi-row statements instead of round trips per event. This module
runs them over batches of one topic with the guarantees the pipeline needs:

- events of one key (one conversation) are handled in order, one after another;
  different keys run concurrently (bounded), so a slow LLM call for one
  conversation does not hold up the others in the batch (a ``handle_batch``
  keeps the same per-conversation order itself);
- transient failures (database or broker away: ``streams.retry.is_transient``) are
  retried with backoff, so no event is skipped; an event that cannot be parsed, or
  whose handler raises anything else, goes to ``deadletter`` with the reason, and the
  worker goes on. A failure the data causes (a value PostgreSQL refuses, a row too
  large for an index, an output that cannot be encoded) is never transient;
- a batch handler that raises anything else is not trusted with the batch: its
  events go through ``handle`` one by one, so that only the bad one is dead-lettered.
  Encoding the outputs is part of handling (an output UTF-8 cannot hold fails its
  event there, not the whole batch's produce later);
- a batch's usage increments are added up per workspace, day and kind;
- the outputs are acknowledged by the broker before the batch is committed.

``windowed_agent`` gives the same parsing, retries and dead letters to stages whose events
take seconds each and are independent (ingestion): no batches, a window of events in
flight, each acked as soon as it is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import faust
from pydantic import BaseModel, ValidationError

from streams import pipelined, produce, storable, window
from streams.contracts import DeadLetter, UsageEvent
from streams.retry import DATA_ERRORS, is_transient, with_retry
from streams.take import take_batches
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
    data: bytes | None = None  # the value's bytes, once encoded


def _encoded(outs: list[Out]) -> list[Out]:
    """The outputs with their bytes: raises here, for this event, on a value that cannot be
    encoded (a lone surrogate), rather than in the batch's produce."""
    return [o if o.data is not None else replace(o, data=encode(o.value)) for o in outs]


Handler = Callable[[Any], Awaitable[list[Out]]]
# The outputs of each event, in the order of the events given.
BatchHandler = Callable[[list[Any]], Awaitable[list[list[Out]]]]


def _dead(stage: str, reason: str, code: str, raw: bytes, parsed: Any) -> DeadLetter:
    return DeadLetter(
        trace_id=getattr(parsed, "trace_id", None) or "unknown",
        stage=stage,
        reason=reason,
        error_code=code,
        workspace_id=getattr(parsed, "workspace_id", None),
        channel_id=getattr(parsed, "channel_id", None),
        payload=raw.decode("utf-8", "replace")[:65536],
    )


def _add_up_usage(outs: list[Out]) -> list[Out]:
    """One usage increment per workspace, day and kind for the batch, not one per message.

    Each increment is a record to produce and to consume again (four per answered
    message); their sum counts the same in the usage table. The sum keeps the first
    increment's place, trace and key (with ``+N`` for the N increments added to it).
    """
    merged: dict[tuple[object, ...], int] = {}
    parts: dict[int, list[UsageEvent]] = {}
    out: list[Out] = []
    for o in outs:
        v = o.value
        if not isinstance(v, UsageEvent):
            out.append(o)
            continue
        # Details the stats keep apart (channel, run outcome) stay apart in the sum.
        at = merged.setdefault((v.workspace_id, v.day, v.kind, v.channel_id, v.outcome), len(out))
        if at == len(out):
            out.append(o)
        parts.setdefault(at, []).append(v)
    for at, evs in parts.items():
        if len(evs) > 1:
            first = evs[0]
            total = first.model_copy(
                update={
                    "event_key": f"{first.event_key}+{len(evs) - 1}",
                    "amount": sum(e.amount for e in evs),
                    "occurred_at": max(e.occurred_at for e in evs),
                    "latency_ms": _sum_or_none(e.latency_ms for e in evs),
                    "cost_usd": _sum_or_none(e.cost_usd for e in evs),
                }
            )
            out[at] = Out(out[at].topic, total, out[at].key, out[at].partition)
    return out


def _sum_or_none(values: Iterable[Any]) -> Any:
    """The sum of the values given, None when none was (a sum of latencies or costs)."""
    given = [v for v in values if v is not None]
    return sum(given) if given else None


Parse = Callable[[faust.EventT], Any]


def model_parser(model: type[M]) -> Parse:
    """Read a record's value as the topic's contract (raises ``ValidationError``)."""

    def parse(e: faust.EventT) -> M:
        try:
            return model.model_validate_json(e.value)
        except ValidationError as exc:
            raise ValueError(f"invalid {model.__name__}: {exc}") from None

    return parse


def _parse(app: OmnichatApp, stage: str, e: faust.EventT, parse: Parse) -> tuple[Any, Out | None]:
    """The event, or the dead letter saying why it is not one."""
    try:
        return parse(e), None
    except ValueError as exc:  # ValidationError is one
        dead = _dead(stage, str(exc), "invalid_event", e.value, _traced(e.value))
        return None, Out(app.topics_.deadletter, dead)


class _Trace:
    def __init__(self, trace_id: Any) -> None:
        self.trace_id = storable.scrub(trace_id) if isinstance(trace_id, str) else None


def _traced(raw: bytes) -> _Trace | None:
    """The trace id of a record that is not its contract, when it still has one: so that
    its dead letter can be found by the trace of the webhook that started it."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return _Trace(value.get("trace_id")) if isinstance(value, dict) else None


def _parser(model: type[M] | None, parse: Parse | None) -> Parse:
    if parse is not None:
        return parse
    assert model is not None, "a stage reads its topic's contract or has its own parse"
    return model_parser(model)


async def _handle_one(
    app: OmnichatApp, stage: str, handle: Handler, raw: bytes, event: Any
) -> list[Out]:
    try:
        return await with_retry(stage, lambda: _encoded_outs(handle, event))
    except Exception as exc:  # a bad event must not stop the worker
        if is_transient(exc):
            raise
        log.exception(
            "%s: event failed, dead-lettered (trace %s)", stage, getattr(event, "trace_id", "?")
        )
        code = "data_error" if isinstance(exc, DATA_ERRORS) else "internal_error"
        reason = f"{type(exc).__name__}: {exc}"
        return [Out(app.topics_.deadletter, _dead(stage, reason, code, raw, event))]


async def _encoded_outs(handle: Handler, event: Any) -> list[Out]:
    return _encoded(await handle(event))


Item = tuple[bytes, Any]  # an event's bytes (for a dead letter) and what parse made of it


async def handle_events(
    app: OmnichatApp,
    name: str,
    handle: Handler,
    handle_batch: BatchHandler | None,
    items: list[Item],
    keys: list[bytes | None],
    concurrency: int = 16,
) -> list[Out]:
    """The outputs of a batch's parsed events: by ``handle_batch`` when there is one (and
    it does not fail), else by ``handle``, each key's events in order."""

    async def run_key(group: list[Item]) -> list[Out]:
        out: list[Out] = []
        for raw, event in group:
            out += await _handle_one(app, name, handle, raw, event)
        return out

    async def one_by_one() -> list[Out]:
        groups: dict[bytes | None, list[Item]] = {}
        for key, item in zip(keys, items, strict=True):
            groups.setdefault(key, []).append(item)
        if len(groups) == 1:
            return await run_key(items)
        # At most ``concurrency`` tasks take the keys in turn (not one task per key).
        todo = list(groups.values())
        results: list[list[Out]] = [[] for _ in todo]
        position = iter(range(len(todo)))

        async def runner() -> None:
            for i in position:
                results[i] = await run_key(todo[i])

        await asyncio.gather(*(runner() for _ in range(min(concurrency, len(todo)))))
        return [o for outs in results for o in outs]

    if handle_batch is None or not items:
        return await one_by_one()
    evs = [event for _, event in items]

    async def batch() -> list[list[Out]]:
        results = await handle_batch(evs)
        assert len(results) == len(evs), f"{name}: one list of outputs per event"
        return [_encoded(outs) for outs in results]

    try:
        results = await with_retry(name, batch)
    except Exception as exc:  # find the bad event: one by one, each with its own dead letter
        if is_transient(exc):
            raise
        log.exception("%s: batch of %d failed; handling it event by event", name, len(evs))
        return await one_by_one()
    return [o for outs in results for o in outs]


async def send_outs(app: OmnichatApp, stage: str, outs: list[Out]) -> None:
    """Produce a stage's outputs and wait until the broker has every one (counted as out or
    failed)."""
    m = app.metrics
    futures = []
    for o in outs:
        key = o.key.encode() if o.key is not None else None
        data = o.data if o.data is not None else encode(o.value)
        futures.append(await produce.send(app, o.topic, data, key, o.partition))
        if o.topic is app.topics_.deadletter:
            m.events_failed.labels(stage).inc()
        else:
            m.events_out.labels(stage).inc()
    for fut in futures:
        await fut


def stage_agent(
    app: OmnichatApp,
    *,
    name: str,
    topic: faust.TopicT,
    model: type[M] | None = None,
    parse: Parse | None = None,
    handle: Handler,
    handle_batch: BatchHandler | None = None,
    batch: int = 200,
    within: float = 0.005,
    concurrency: int = 16,
) -> None:
    """Register an agent that runs ``handle`` (or ``handle_batch``) over ``topic`` as
    described above. Events are the topic's contract ``model``, or what ``parse`` makes of
    each record (normalize reads raw bodies with their headers)."""
    m = app.metrics
    read = _parser(model, parse)

    @app.agent(topic, name=name)
    async def agent(stream: faust.StreamT) -> None:
        async for events in take_batches(stream, batch, within):
            started = time.perf_counter()
            m.events_in.labels(name).inc(len(events))
            outs: list[Out] = []
            items: list[Item] = []
            keys: list[bytes | None] = []
            for e in events:
                event, dead = _parse(app, name, e, read)
                if dead is not None:
                    outs.append(dead)
                else:
                    assert event is not None
                    items.append((e.value, event))
                    keys.append(e.key)
            if items:
                outs += await handle_events(
                    app, name, handle, handle_batch, items, keys, concurrency
                )
            await send_outs(app, name, _add_up_usage(outs))
            m.stage_latency.labels(name).observe(time.perf_counter() - started)


def windowed_agent(
    app: OmnichatApp,
    *,
    name: str,
    topic: faust.TopicT,
    model: type[M] | None = None,
    parse: Parse | None = None,
    handle: Handler,
    in_flight: int,
) -> None:
    """Register an agent that runs ``handle`` on up to ``in_flight`` events at once, each
    acked as soon as it and its outputs are done (``streams/window.py``): for long,
    independent events, where a batch's tail would leave the others' resources idle.
    Parsing, retries and dead letters are ``stage_agent``'s; there is no batch handler."""
    m = app.metrics
    read = _parser(model, parse)

    async def one(e: faust.EventT) -> None:
        started = time.perf_counter()
        m.events_in.labels(name).inc()
        event, dead = _parse(app, name, e, read)
        if dead is not None:
            outs = [dead]
        else:
            assert event is not None
            outs = await _handle_one(app, name, handle, e.value, event)
        await send_outs(app, name, outs)
        m.stage_latency.labels(name).observe(time.perf_counter() - started)

    @app.agent(topic, name=name)
    async def agent(stream: faust.StreamT) -> None:
        await window.in_flight(stream, in_flight, one)


def pipelined_agent(
    app: OmnichatApp,
    *,
    name: str,
    topic: faust.TopicT,
    model: type[M] | None = None,
    parse: Parse | None = None,
    handle: Handler,
    handle_batch: BatchHandler | None = None,
    batch: int = 200,
    within: float = 0.005,
    concurrency: int = 16,
    in_flight: int = 16,
    drain: float = 0.0,
) -> None:
    """``stage_agent`` with up to ``in_flight`` batches handled at once
    (``streams/pipelined.py``): for a stage that waits on third parties (send), where one
    slow call must not hold the batches behind it. A key's events stay in order."""
    m = app.metrics
    read = _parser(model, parse)

    async def unit(events: list[faust.EventT]) -> None:
        started = time.perf_counter()
        m.events_in.labels(name).inc(len(events))
        outs: list[Out] = []
        items: list[Item] = []
        keys: list[bytes | None] = []
        for e in events:
            event, dead = _parse(app, name, e, read)
            if dead is not None:
                outs.append(dead)
            else:
                assert event is not None
                items.append((e.value, event))
                keys.append(e.key)
        if items:
            outs += await handle_events(app, name, handle, handle_batch, items, keys, concurrency)
        await send_outs(app, name, _add_up_usage(outs))
        m.stage_latency.labels(name).observe(time.perf_counter() - started)

    @app.agent(topic, name=name)
    async def agent(stream: faust.StreamT) -> None:
        await pipelined.batches_in_flight(
            stream, max_=batch, within=within, limit=in_flight, handle=unit, drain=drain
        )
