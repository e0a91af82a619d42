"""streams.pipelined.run_units over stand-in batches: overlap, key order, acks, failures, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from streams.pipelined import run_units


@dataclass(eq=False)
class Ev:
    key: bytes
    name: str


@dataclass
class Source:
    """Batches fed through a queue (``None`` ends them); acks recorded in order."""

    queue: asyncio.Queue[list[Ev] | None] = field(default_factory=asyncio.Queue)
    acked: list[str] = field(default_factory=list)

    async def batches(self) -> AsyncIterator[list[Ev]]:
        while (batch := await self.queue.get()) is not None:
            yield batch

    async def ack(self, event: Ev) -> None:
        self.acked.append(event.name)

    def feed(self, *batches: list[Ev] | None) -> None:
        for b in batches:
            self.queue.put_nowait(b)


def evs(*names: str) -> list[Ev]:
    """Events named ``key:n`` (key before the colon)."""
    return [Ev(n.split(":")[0].encode(), n) for n in names]


async def test_a_slow_batch_does_not_hold_the_next_and_acks_come_when_each_is_done() -> None:
    src = Source()
    slow = asyncio.Event()
    handled: list[list[str]] = []

    async def handle(batch: list[Ev]) -> None:
        if any(e.name == "hang:1" for e in batch):
            await slow.wait()
        handled.append([e.name for e in batch])

    src.feed(evs("hang:1", "a:1"), evs("b:1"), evs("c:1"))
    runner = asyncio.create_task(
        run_units(src.batches(), ack=src.ack, limit=4, handle=handle)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.02)
    assert handled == [["b:1"], ["c:1"]]  # the later batches went on
    assert src.acked == ["b:1", "c:1"]  # the slow batch is not acked before it ends
    slow.set()
    src.feed(None)
    await asyncio.wait_for(runner, 1)
    assert sorted(src.acked) == ["a:1", "b:1", "c:1", "hang:1"]


async def test_a_key_in_flight_waits_for_its_earlier_events_the_rest_does_not() -> None:
    src = Source()
    gate = asyncio.Event()
    log: list[str] = []

    async def handle(batch: list[Ev]) -> None:
        names = [e.name for e in batch]
        log.append(f"start {names}")
        if "k:1" in names:
            await gate.wait()
        log.append(f"end {names}")

    src.feed(evs("k:1"), evs("x:1", "k:2", "y:1"))
    runner = asyncio.create_task(
        run_units(src.batches(), ack=src.ack, limit=4, handle=handle)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.02)
    # x and y of the second batch ran; k:2 waits for k:1.
    assert log == ["start ['k:1']", "start ['x:1', 'y:1']", "end ['x:1', 'y:1']"]
    gate.set()
    src.feed(None)
    await asyncio.wait_for(runner, 1)
    assert log[3:] == ["end ['k:1']", "start ['k:2']", "end ['k:2']"]


async def test_at_most_limit_units_run_and_the_next_batch_waits_for_room() -> None:
    src = Source()
    gates = [asyncio.Event() for _ in range(3)]
    running: list[int] = []

    async def handle(batch: list[Ev]) -> None:
        i = int(batch[0].name.split(":")[1])
        running.append(i)
        await gates[i].wait()

    src.feed(evs("a:0"), evs("b:1"), evs("c:2"), None)
    runner = asyncio.create_task(
        run_units(src.batches(), ack=src.ack, limit=2, handle=handle)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.02)
    assert running == [0, 1]
    gates[1].set()
    await asyncio.sleep(0.02)
    assert running == [0, 1, 2]
    gates[0].set()
    gates[2].set()
    await asyncio.wait_for(runner, 1)


async def test_a_failing_unit_stops_the_loop_and_leaves_the_others_unacked() -> None:
    src = Source()
    never = asyncio.Event()

    async def handle(batch: list[Ev]) -> None:
        if batch[0].name == "bad:1":
            await asyncio.sleep(0.01)
            raise RuntimeError("broker away for good")
        await never.wait()

    src.feed(evs("slow:1"), evs("bad:1"))
    with pytest.raises(RuntimeError, match="broker away"):
        await asyncio.wait_for(
            run_units(src.batches(), ack=src.ack, limit=4, handle=handle),  # type: ignore[arg-type]
            1,
        )
    assert src.acked == []


async def test_stopping_lets_units_in_flight_finish_within_the_drain() -> None:
    src = Source()

    async def handle(batch: list[Ev]) -> None:
        await asyncio.sleep(0.05)

    src.feed(evs("a:1"))
    runner = asyncio.create_task(
        run_units(
            src.batches(),
            ack=src.ack,
            limit=4,
            handle=handle,  # type: ignore[arg-type]
            drain=1.0,
        )
    )
    await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert src.acked == ["a:1"]  # finished and acked, not cut off
