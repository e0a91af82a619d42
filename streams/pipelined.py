"""``batches_in_flight``: handle several batches of a stream at once, each acked when done.

Why: a stage that waits on third parties (send) must not let one slow call hold every
event behind it. With one batch at a time, a provider that hangs until its timeout holds
the batch, and every later batch of every channel waits. Here the next batch starts as
soon as it is taken, up to ``limit`` in flight; a slow batch holds only its own events
(and the commit behind them, never anything else's handling).

What it keeps:

- events of one key are handled one after another, in stream order: the events of a new
  batch whose key is still in flight in an earlier batch form a unit of their own that
  starts when that batch is done; the rest of the batch starts at once;
- an event is acked only after its unit was handled (outputs acknowledged by the broker
  included); acks come out of offset order, which is safe: the consumer commits only a
  run of acks that starts at the committed offset (``streams.transport.commit_point``), so
  a slow unit holds the commit back and is never skipped;
- a unit that raises stops the loop: the others are cancelled, unacked, and the error
  propagates as a failing batch does in ``stage_agent``;
- when the agent stops, units in flight get ``drain`` seconds to finish before they are
  cancelled (and, unacked, delivered again to the next owner).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any

import faust

from streams.take import take_batches

log = logging.getLogger(__name__)

Handle = Callable[[list[faust.EventT]], Awaitable[None]]
Ack = Callable[[faust.EventT], Awaitable[Any]]


async def batches_in_flight(
    stream: faust.StreamT,
    *,
    max_: int,
    within: float,
    limit: int,
    handle: Handle,
    drain: float = 0.0,
) -> None:
    """Run ``handle`` over batches of ``stream``, up to ``limit`` units at once."""
    await run_units(
        take_batches(stream, max_, within, ack=False),
        ack=stream.ack,
        limit=limit,
        handle=handle,
        drain=drain,
    )


async def run_units(
    batches: AsyncIterable[Sequence[faust.EventT]],
    *,
    ack: Ack,
    limit: int,
    handle: Handle,
    drain: float = 0.0,
) -> None:
    """The loop of ``batches_in_flight`` over any source of batches (events need ``key``)."""
    if limit < 1:
        raise ValueError("batches_in_flight needs a limit of at least one")
    room = asyncio.Semaphore(limit)
    tails: dict[Any, asyncio.Task[None]] = {}  # the last unit holding each key
    running: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    loop_task = asyncio.current_task()

    async def run(events: list[faust.EventT], before: set[asyncio.Task[None]]) -> None:
        try:
            if before:  # the same keys' earlier events first
                await asyncio.wait(before)
            await handle(events)
            for event in events:
                await ack(event)
        finally:
            room.release()

    def finished(task: asyncio.Task[None], keys: set[Any]) -> None:
        running.discard(task)
        for key in keys:
            if tails.get(key) is task:
                del tails[key]
        if not task.cancelled() and (exc := task.exception()) is not None and not failures:
            failures.append(exc)
            if loop_task is not None:
                loop_task.cancel()  # wake the loop wherever it waits

    def spawn(events: list[faust.EventT], before: set[asyncio.Task[None]]) -> None:
        keys = {event.key for event in events}
        task = asyncio.create_task(run(events, before))
        for key in keys:
            tails[key] = task
        running.add(task)
        task.add_done_callback(lambda t, ks=keys: finished(t, ks))  # type: ignore[misc]

    try:
        async for events in batches:
            free: list[faust.EventT] = []
            waiting: dict[Any, list[faust.EventT]] = {}
            for event in events:
                key = event.key
                if key in waiting or key in tails:
                    waiting.setdefault(key, []).append(event)
                else:
                    free.append(event)
            units = [(evs, {tails[key]}) for key, evs in waiting.items()]
            if free:
                units.insert(0, (free, set()))
            for evs, before in units:
                await room.acquire()
                spawn(evs, before)
        while running:  # the stream ended (a finite one): let the units finish
            await asyncio.wait(set(running))
    except asyncio.CancelledError:
        if failures:
            raise failures[0] from None
        if running and drain > 0:
            log.info("stopping: %d batches in flight get %.0fs to finish", len(running), drain)
            await asyncio.wait(set(running), timeout=drain)
        raise
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if failures:
        raise failures[0]
