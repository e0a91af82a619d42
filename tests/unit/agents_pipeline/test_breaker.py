"""The per-channel circuit breaker and call slots of the send stage, on a hand-moved clock."""

from __future__ import annotations

import asyncio

from agents_pipeline.breaker import ChannelBreakers, ChannelSlots


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_n_consecutive_failures_and_defers_until_the_cooldown() -> None:
    clock = Clock()
    b = ChannelBreakers(3, 30.0, clock=clock)
    for _ in range(2):
        assert b.admit("ch").admit
        assert b.failed("ch", probe=False) is False
    assert b.failed("ch", probe=False) is True
    verdict = b.admit("ch")
    assert not verdict.admit and verdict.retry_in == 30.0
    clock.t += 10
    assert b.admit("ch").retry_in == 20.0
    assert b.admit("other").admit  # other channels are not touched


def test_a_success_resets_the_count() -> None:
    b = ChannelBreakers(2, 30.0, clock=Clock())
    b.failed("ch", probe=False)
    b.succeeded("ch")
    assert b.failed("ch", probe=False) is False
    assert b.admit("ch").admit


def test_half_open_lets_one_probe_through_and_its_result_decides() -> None:
    clock = Clock()
    b = ChannelBreakers(1, 30.0, clock=clock)
    b.failed("ch", probe=False)
    clock.t += 30
    probe = b.admit("ch")
    assert probe.admit and probe.probe
    assert not b.admit("ch").admit  # one probe at a time
    b.failed("ch", probe=True)  # the probe failed: open again for a cooldown
    assert b.admit("ch").retry_in == 30.0
    clock.t += 30
    assert b.admit("ch").probe
    b.succeeded("ch")
    assert b.admit("ch") == b.admit("ch") and b.admit("ch").admit and not b.admit("ch").probe


def test_a_probe_that_never_reports_frees_its_place() -> None:
    clock = Clock()
    b = ChannelBreakers(1, 5.0, probe_timeout=20.0, clock=clock)
    b.failed("ch", probe=False)
    clock.t += 5
    assert b.admit("ch").probe
    clock.t += 21
    assert b.admit("ch").probe


def test_a_retry_after_pauses_the_channel_even_below_the_threshold() -> None:
    clock = Clock()
    b = ChannelBreakers(5, 30.0, clock=clock)
    assert b.failed("ch", probe=False, pause=120.0) is True
    assert b.retry_in("ch") == 120.0
    clock.t += 120
    assert b.admit("ch").probe


async def test_slots_bound_calls_per_channel_and_a_wait_is_bounded() -> None:
    slots = ChannelSlots(2)
    assert await slots.acquire("ch", 0.0)
    assert await slots.acquire("ch", 0.0)
    assert not await slots.acquire("ch", 0.01)  # full: gives up after the wait
    assert await slots.acquire("other", 0.0)
    later = asyncio.create_task(slots.acquire("ch", 1.0))
    await asyncio.sleep(0.01)
    slots.release("ch")
    assert await later


async def test_a_busy_channel_keeps_its_waiters_a_stuck_one_lets_them_go() -> None:
    slots = ChannelSlots(1)
    assert await slots.acquire("busy", 0.0)

    async def call() -> None:  # queued before the waiter; holds its slot 20 ms
        assert await slots.acquire("busy", 5.0)
        await asyncio.sleep(0.02)
        slots.release("busy")

    calls = [asyncio.create_task(call()) for _ in range(6)]
    await asyncio.sleep(0)
    # Queued behind six calls (~120 ms), far past its 50 ms stall bound: it keeps waiting,
    # since the channel keeps moving, and gets its slot.
    waiter = asyncio.create_task(slots.acquire("busy", 5.0, stall=0.05))
    await asyncio.sleep(0.02)
    slots.release("busy")
    await asyncio.gather(*calls)
    assert await asyncio.wait_for(waiter, 1.0)

    assert await slots.acquire("stuck", 0.0)  # a call that never ends
    assert not await slots.acquire("stuck", 5.0, stall=0.05)
