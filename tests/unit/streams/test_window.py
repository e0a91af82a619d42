"""streams.window.in_flight over a stand-in stream: the window, acks, key order, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from streams.window import in_flight


@dataclass(eq=False)
class Ev:
    key: bytes
    name: str


@dataclass
class FakeStream:
    """What in_flight uses of a faust stream: ``noack()``, ``events()``, ``ack(event)``.

    Events are fed through a queue; ``None`` ends the stream."""

    queue: asyncio.Queue[Ev | None] = field(default_factory=asyncio.Queue)
    acked: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Ev]:
        while (ev := await self.queue.get()) is not None:
            self.taken.append(ev.name)
            yield ev

    async def ack(self, event: Ev) -> bool:
        self.acked.append(event.name)
        return True

    def feed(self, *events: Ev | None) -> None:
        for e in events:
            self.queue.put_nowait(e)


async def test_the_next_event_starts_as_soon_as_one_ends_and_each_is_acked_after_it() -> None:
    stream = FakeStream()
    gates = {n: asyncio.Event() for n in "abcd"}
    started: list[str] = []

    async def handle(ev: Ev) -> None:
        started.append(ev.name)
        await gates[ev.name].wait()

    stream.feed(*(Ev(n.encode(), n) for n in "abcd"), None)
    runner = asyncio.create_task(in_flight(stream, 2, handle))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert started == ["a", "b"]  # two at a time
    assert stream.taken == ["a", "b"]  # the third is not taken while two run
    gates["b"].set()
    await asyncio.sleep(0.01)
    assert started == ["a", "b", "c"]  # c starts while a still runs: no batch tail
    assert stream.acked == ["b"]  # out of order, and only what ended
    for n in "acd":
        gates[n].set()
    await asyncio.wait_for(runner, 1)
    assert sorted(stream.acked) == ["a", "b", "c", "d"]
    assert len(stream.acked) == 4  # once each


async def test_events_of_one_key_run_in_order_one_after_another() -> None:
    stream = FakeStream()
    log: list[str] = []

    async def handle(ev: Ev) -> None:
        log.append(f"start {ev.name}")
        await asyncio.sleep(0.02 if ev.name == "k1" else 0.001)
        log.append(f"end {ev.name}")

    stream.feed(Ev(b"k", "k1"), Ev(b"other", "o1"), Ev(b"k", "k2"), None)
    await asyncio.wait_for(in_flight(stream, 3, handle), 1)  # type: ignore[arg-type]
    assert log.index("end k1") < log.index("start k2")
    assert log.index("end o1") < log.index("end k1")  # other keys do not wait
    assert sorted(stream.acked) == ["k1", "k2", "o1"]


async def test_a_failing_handler_stops_the_loop_and_leaves_the_others_unacked() -> None:
    stream = FakeStream()
    cancelled: list[str] = []

    async def handle(ev: Ev) -> None:
        if ev.name == "bad":
            await asyncio.sleep(0.01)
            raise RuntimeError("broker away for good")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(ev.name)
            raise

    stream.feed(Ev(b"1", "slow"), Ev(b"2", "bad"))  # the stream stays open: the loop waits
    with pytest.raises(RuntimeError, match="broker away"):
        await asyncio.wait_for(in_flight(stream, 4, handle), 1)  # type: ignore[arg-type]
    assert cancelled == ["slow"]
    assert stream.acked == []


async def test_stopping_cancels_running_handlers_without_acking_them() -> None:
    stream = FakeStream()
    done = asyncio.Event()

    async def handle(ev: Ev) -> None:
        if ev.name == "quick":
            done.set()
            return
        await asyncio.sleep(10)

    stream.feed(Ev(b"1", "long"), Ev(b"2", "quick"))
    runner = asyncio.create_task(in_flight(stream, 2, handle))  # type: ignore[arg-type]
    await asyncio.wait_for(done.wait(), 1)
    await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert stream.acked == ["quick"]  # "long" will be delivered again
