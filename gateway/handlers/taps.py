"""Taps: GET /api/v1/taps/{topic}, a pipeline topic's records of the caller's workspace as SSE.

Each tap owns one AIOKafkaConsumer with ``group_id=None`` and a manual
assignment of every partition: it never joins the pipeline's consumer groups,
so it can neither slow them nor trigger a rebalance. A bounded queue sits
between the consumer and the client; a client that does not keep up is
dropped with a final ``event: error`` instead of being buffered without bound.

Bounds: ``webhooks.raw`` (customers' bodies as received) and ``deadletter`` need an
admin key (403 for read keys); a workspace holds at most
``tap_max_open_per_workspace`` taps across every gateway process
(``gateway/tap_leases.py``, 429 past it), and a tap starts at most
``tap_max_lookback_seconds`` back (400 for a time, ``earliest`` or an offset
reaching older records).

Each event::

    id: <partition>:<offset>
    event: <topic>
    data: {"partition", "offset", "timestamp", "key", "headers"?, "value"}

and a ``: keep-alive`` comment every 15 s of silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from gateway import tap_leases
from gateway.errors import ApiError
from gateway.responses import dumps
from gateway.services import caller, services
from streams import offsets
from streams.topics import DEADLETTER, PIPELINE_TOPICS, WEBHOOKS_RAW, bootstrap_servers

log = logging.getLogger(__name__)

MAX_TAPS = 32  # per process: each tap holds a consumer and its broker connections
QUEUE_SIZE = 1000  # events waiting for one client
PUT_TIMEOUT = 5.0  # how long the consumer waits for room before the client counts as slow
WRITE_TIMEOUT = 5.0  # one write to the client; longer means a stalled client
HEARTBEAT_SECONDS = 15.0
TICK_SECONDS = 0.5  # how soon a disconnected client is noticed while the topic is quiet
START_TIMEOUT = 10.0  # connecting the consumer and finding the start offsets
FETCH_WAIT_MS = 200  # the broker may hold a fetch this long (Tansu holds it all)

KEEP_ALIVE = b": keep-alive\n\n"
ADMIN_TOPICS = frozenset({WEBHOOKS_RAW, DEADLETTER})  # raw bodies and failed events: admin keys


class TapCount:
    """Taps open in this process: the limit's state, and proof that closed taps leave nothing."""

    def __init__(self) -> None:
        self.active = 0


TAPS = TapCount()


def active_taps() -> int:
    """How many taps this process has open (each one a running consumer)."""
    return TAPS.active


@dataclass(frozen=True)
class StartAt:
    """Where a tap starts reading, from the ``from`` query parameter."""

    kind: Literal["now", "earliest", "offset", "time"]
    offset: int = 0
    time_ms: int = 0


_OFFSET = re.compile(r"\d{1,18}")


def parse_from(raw: str | None) -> StartAt:
    """``now`` (default), ``earliest``, an offset for every partition, or an ISO 8601 time."""
    if raw is None or raw in ("", "now"):
        return StartAt("now")
    if raw == "earliest":
        return StartAt("earliest")
    if _OFFSET.fullmatch(raw):
        return StartAt("offset", offset=int(raw))
    # A '+' of a UTC offset arrives as a space when the client did not percent-encode it.
    for text in (raw, raw.replace(" ", "+")):
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return StartAt("time", time_ms=max(0, int(when.timestamp() * 1000)))
    raise ApiError(
        400,
        "invalid_parameter",
        "from must be now, earliest, an offset or an ISO 8601 time",
        {"name": "from"},
    )


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def _same_workspace(value: Any, workspace_id: UUID) -> bool:
    try:
        return UUID(str(value)) == workspace_id
    except ValueError:
        return False


def sse_frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One Server-Sent Event (the JSON is on one line: json escapes every newline)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {dumps(data)}\n\n".encode()


def record_event(
    topic: str, record: ConsumerRecord, value: Any, headers: dict[str, str] | None
) -> bytes:
    """The SSE frame of one record."""
    payload: dict[str, Any] = {
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(),
        "key": _text(record.key),
    }
    if headers is not None:
        payload["headers"] = headers
    payload["value"] = value
    return sse_frame(topic, payload, f"{record.partition}:{record.offset}")


Selector = Callable[[ConsumerRecord], bytes | None]


def selector(topic: str, workspace_id: UUID) -> Selector:
    """A function turning a record into its frame, or None when it is not this workspace's."""
    if topic == WEBHOOKS_RAW:

        def raw(record: ConsumerRecord) -> bytes | None:
            # The workspace rides the record headers; the value is the provider's body.
            headers = {k: _text(v) or "" for k, v in record.headers or ()}
            if not _same_workspace(headers.get("workspace_id"), workspace_id):
                return None
            return record_event(topic, record, _text(record.value), headers)

        return raw

    def contract(record: ConsumerRecord) -> bytes | None:
        try:
            value = json.loads(record.value) if record.value is not None else None
        except ValueError:
            return None
        if not isinstance(value, dict) or not _same_workspace(
            value.get("workspace_id"), workspace_id
        ):
            return None  # another workspace's, or none at all (dead letter of no workspace)
        return record_event(topic, record, value, None)

    return contract


async def pump(consumer: Any, queue: asyncio.Queue[bytes], select: Selector) -> str:
    """Move the workspace's records into the queue; return why it stopped (a slow client)."""
    while True:
        batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS * 2, max_records=500)
        for records in batch.values():
            for record in records:
                frame = select(record)
                if frame is None:
                    continue
                try:
                    await asyncio.wait_for(queue.put(frame), PUT_TIMEOUT)
                except TimeoutError:
                    return "slow_client"


def beyond_lookback(lookback_seconds: int) -> ApiError:
    """400 for a ``from`` that reaches records older than the window."""
    return ApiError(
        400,
        "from_beyond_lookback",
        f"a tap starts at most {lookback_seconds} s back: give a later from",
        {"name": "from", "max_lookback_seconds": lookback_seconds},
    )


def check_lookback(start: StartAt, lookback_seconds: int, now_ms: int) -> None:
    """400 for a time before the window (0 seconds: no window).

    ``earliest`` and offsets are checked against the records once the consumer is up.
    """
    if lookback_seconds > 0 and start.kind == "time":
        if start.time_ms < now_ms - lookback_seconds * 1000:
            raise beyond_lookback(lookback_seconds)


async def _offsets_at(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    time_ms: int,
    end: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """The first offset of each partition whose record is at or after ``time_ms`` (the end
    when there is none).

    A found record's timestamp is never before the time asked: Tansu 0.6.0 answers "none"
    with offset 0 and timestamp -1 (Kafka with no offset), which read as an offset would
    start the tap at the partition's first record.
    """
    found = await consumer.offsets_for_times({tp: time_ms for tp in tps})
    out: dict[TopicPartition, int] = {}
    for tp in tps:
        hit = found.get(tp)
        out[tp] = hit.offset if hit is not None and hit.timestamp >= time_ms else end[tp]
    return out


async def _positions(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    start: StartAt,
    lookback_seconds: int = 0,
) -> dict[TopicPartition, int]:
    """The first offset to read of every partition, fixed before the stream begins.

    With a lookback window: 400 when ``earliest`` or the offset would start some
    partition at a record older than the window (one ListOffsets by time).
    """
    # Checked by a fetch: the dev broker's ListOffsets can answer short (streams/offsets.py).
    end = await offsets.confirm(consumer, await consumer.end_offsets(tps))
    if start.kind == "now":
        return end
    begin = await consumer.beginning_offsets(tps)
    if start.kind == "time":  # a time is checked before the consumer starts
        return await _offsets_at(consumer, tps, start.time_ms, end)
    if start.kind == "earliest":
        positions = begin
    else:
        positions = {tp: min(max(start.offset, begin[tp]), end[tp]) for tp in tps}
    if lookback_seconds > 0:
        not_before = int(time.time() * 1000) - lookback_seconds * 1000
        # The first record young enough; none at all: every record there is too old.
        floor = await _offsets_at(consumer, tps, not_before, end)
        if any(positions[tp] < floor[tp] for tp in tps):
            raise beyond_lookback(lookback_seconds)
    return positions


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of the topic (refreshing metadata when the topic is new)."""
    parts = consumer.partitions_for_topic(topic)
    for _ in range(20):
        if parts:
            break
        await asyncio.sleep(0.1)
        # aiokafka has no public call that refreshes the consumer's own metadata.
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ApiError(503, "topic_unavailable", f"topic {topic} has no partitions yet")
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def open_consumer(
    broker_url: str, topic: str, start: StartAt, lookback_seconds: int = 0
) -> AIOKafkaConsumer:
    """A started consumer of every partition, positioned per ``from`` (503: broker away;
    400: ``from`` reaches records older than the lookback window)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(broker_url),
        group_id=None,  # never a member of the pipeline's groups: no commits, no rebalances
        enable_auto_commit=False,
        auto_offset_reset="latest",  # only if a position fell out of retention meanwhile
        fetch_max_wait_ms=FETCH_WAIT_MS,
        client_id="omnichat-tap",
    )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            await consumer.start()
            tps = await _partitions(consumer, topic)
            consumer.assign(tps)
            for tp, offset in (await _positions(consumer, tps, start, lookback_seconds)).items():
                consumer.seek(tp, offset)
    except ApiError:
        await _stop(consumer)
        raise
    except Exception as exc:
        await _stop(consumer)
        log.warning("tap of %s could not start: %s", topic, exc)
        raise ApiError(
            503, "broker_unavailable", "the broker is not reachable", headers={"Retry-After": "5"}
        ) from None
    except asyncio.CancelledError:
        await _stop(consumer)
        raise
    return consumer


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # Stopping a consumer that never fully started must not hide why it did not.
    with contextlib.suppress(Exception):
        await consumer.stop()


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _send(resp: web.StreamResponse, data: bytes) -> None:
    # A stalled client never holds the writer longer than WRITE_TIMEOUT.
    await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT)


async def stream(
    request: web.Request,
    resp: web.StreamResponse,
    queue: asyncio.Queue[bytes],
    pumping: asyncio.Task[str],
) -> None:
    """Write queued events and heartbeats until the client leaves or must be dropped."""
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    while True:
        if pumping.done():
            if pumping.cancelled() or pumping.exception() is not None:
                code, message = "tap_failed", "the tap's consumer stopped"
                if not pumping.cancelled():
                    log.warning("tap consumer failed: %r", pumping.exception())
            else:
                code, message = pumping.result(), "the client did not keep up; reconnect"
            await _send(resp, sse_frame("error", {"code": code, "message": message}))
            return
        if _gone(request):
            return
        try:
            frame = await asyncio.wait_for(queue.get(), TICK_SECONDS)
        except TimeoutError:
            if loop.time() - last_write >= HEARTBEAT_SECONDS:
                await _send(resp, KEEP_ALIVE)
                last_write = loop.time()
            continue
        await _send(resp, frame)
        last_write = loop.time()


async def tap_topic(request: web.Request) -> web.StreamResponse:
    """Stream a pipeline topic's records of the caller's workspace until the client leaves."""
    topic = request.match_info["topic"]
    if topic not in PIPELINE_TOPICS:
        raise ApiError(404, "not_found", "topic not found", {"topics": list(PIPELINE_TOPICS)})
    who = caller(request)
    if topic in ADMIN_TOPICS and "admin" not in who.scopes:
        raise ApiError(
            403,
            "insufficient_scope",
            f"the {topic} tap needs an admin key: it shows raw bodies or failed events",
            {"topic": topic, "required_scope": "admin"},
        )
    settings = services(request).settings
    start = parse_from(request.query.get("from"))
    lookback = settings.tap_max_lookback_seconds
    check_lookback(start, lookback, int(time.time() * 1000))
    if TAPS.active >= MAX_TAPS:
        raise ApiError(
            429,
            "too_many_taps",
            f"this gateway process already serves {MAX_TAPS} taps",
            {"limit": MAX_TAPS, "scope": "process"},
            headers={"Retry-After": "5"},
        )
    broker_url = settings.broker_url
    assert broker_url is not None  # create_app refuses to start without one
    select = selector(topic, who.workspace_id)
    lease = await tap_leases.acquire(
        services(request).redis, who.workspace_id, settings.tap_max_open_per_workspace
    )
    TAPS.active += 1
    try:
        consumer = await open_consumer(broker_url, topic, start, lookback)
    except BaseException:
        TAPS.active -= 1
        await lease.release()
        raise
    pumping: asyncio.Task[str] | None = None
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        }
    )
    try:
        await resp.prepare(request)
        # Headers go out with the first bytes; the comment tells the client the tap is live.
        await _send(resp, f": tap {topic}\n\n".encode())
        pumping = asyncio.create_task(pump(consumer, queue, select), name=f"tap-{topic}")
        await stream(request, resp, queue, pumping)
        await asyncio.wait_for(resp.write_eof(), WRITE_TIMEOUT)
    except (ConnectionError, TimeoutError):
        _abort(request)  # gone or stalled: nothing more can reach it
    finally:
        try:
            if pumping is not None:
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pumping
            await consumer.stop()
        finally:
            TAPS.active -= 1
            await lease.release()
    return resp
