"""``take_batches``: faust's ``Stream.take_events`` without its idle polling.

faust's version waits for a full buffer with a timeout in a loop, so an idle agent
wakes every ``within`` seconds (200 times a second at 5 ms, for each of the
worker's agents) just to find nothing. Here an empty buffer waits for its first
event with no timeout; only then does the batch wait up to ``within`` for more.
The buffering and cleanup are faust's (faust-streaming 0.15.3); unlike faust's, a
batch is acked only once the agent asked for the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import faust
from mode.utils.futures import notify


def take_batches(
    stream: faust.StreamT, max_: int, within: float, *, ack: bool = True
) -> AsyncGenerator[Sequence[faust.EventT], None]:
    """Yield lists of up to ``max_`` events: as soon as it is full, or ``within`` seconds
    after its first event arrived. ``ack=False``: the caller acks each event itself
    (``stream.ack``), when it is done with it (``streams/pipelined.py``)."""
    agen = _take(stream, max_, within, ack)
    # As faust's own take: the stream closes a generator left open when it stops.
    stream._active_agens.add(agen)  # type: ignore[attr-defined]
    return agen


async def _take(
    stream: faust.StreamT, max_: int, within: float, ack: bool = True
) -> AsyncGenerator[Sequence[faust.EventT], None]:
    s: Any = stream  # the internals below are faust.Stream's, untyped in its stubs
    events: list[faust.EventT] = []
    nonempty = asyncio.Event()
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future | None = None
    acks = s.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            event = s.current_event
            if event is None:
                raise RuntimeError("take_batches found current_event is None")
            events.append(event)
            nonempty.set()
            if len(events) >= max_:
                full.set()
                consumed.clear()
                await s.wait(consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # as faust's take: a crash, not a silent loss
            s.log.exception("Error adding to take buffer: %r", exc)
            await s.crash(exc)
        return value

    s.enable_acks = False  # acked below, once the batch was handled
    s.add_processor(add_to_buffer)
    s._enable_passive(aiter(s.channel))
    try:
        while not s.should_stop:
            if not events and await s.wait_for_stopped(nonempty):
                break
            await s.wait_for_stopped(full, timeout=within)
            if not events:
                nonempty.clear()
                continue
            consuming = asyncio.get_running_loop().create_future()
            handled = False
            try:
                yield list(events)
                handled = True
            finally:
                # Only a batch the agent came back for was handled. One it abandoned
                # (the worker stopping, the agent raising) stays unacked, so that the
                # commit on the way out cannot move past it: it is delivered again.
                if handled and ack:
                    for event in events:
                        await s.ack(event)
                events.clear()
                nonempty.clear()
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        s.enable_acks = acks
        s._processors.remove(add_to_buffer)
