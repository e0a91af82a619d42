"""``in_flight``: handle up to N events of a stream at once, each acked when it is done.

Why not batches, for long independent events (a document takes seconds): a batch ends
when its slowest event does, so every batch ended with a tail where fewer than N events
ran. Ingesting documents in batches of 32, 4 at a time, both encode threads waited
30-130 ms every ~4.4 s for the next batch (ops/eval/NOTE.md). Here the next event is
taken as soon as one finishes.

What it keeps:

- at most ``limit`` events are taken and not yet acked;
- an event is acked only after its handler returned; a handler still running when the
  agent stops is cancelled and its event stays unacked, so it is delivered again;
- events of one key are handled one after another, in stream order;
- acks come out of offset order, which is safe: the consumer commits only a run of acks
  that starts at the committed offset (``streams.transport.commit_point``), so a slow
  event holds the commit back and is never skipped;
- a handler that raises stops the loop: the others are cancelled, unacked, and the error
  propagates as a failing batch does in ``stage_agent``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust

Handle = Callable[[faust.EventT], Awaitable[None]]


async def in_flight(stream: faust.StreamT, limit: int, handle: Handle) -> None:
    """Run ``handle`` over ``stream``'s events, ``limit`` at a time, acking each as it ends."""
    if limit < 1:
        raise ValueError("in_flight needs a limit of at least one")
    manual = stream.noack()
    slots = asyncio.Semaphore(limit)
    last_of_key: dict[Any, asyncio.Task[None]] = {}
    running: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    loop_task = asyncio.current_task()

    async def run(event: faust.EventT, before: asyncio.Task[None] | None) -> None:
        try:
            if before is not None:  # the same key's previous event first
                await asyncio.wait({before})
            await handle(event)
            await manual.ack(event)
        finally:
            slots.release()

    def finished(task: asyncio.Task[None], key: Any) -> None:
        running.discard(task)
        if last_of_key.get(key) is task:
            del last_of_key[key]
        if not task.cancelled() and (exc := task.exception()) is not None and not failures:
            failures.append(exc)
            if loop_task is not None:
                loop_task.cancel()  # wake the loop wherever it waits

    try:
        await slots.acquire()
        async for event in manual.events():
            key = event.key
            task = asyncio.create_task(run(event, last_of_key.get(key)))
            last_of_key[key] = task
            running.add(task)
            task.add_done_callback(lambda t, k=key: finished(t, k))
            await slots.acquire()
        while running:  # the stream ended (a finite one): let the window drain
            await asyncio.wait(set(running))
    except asyncio.CancelledError:
        if failures:
            raise failures[0] from None
        raise
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if failures:
        raise failures[0]
