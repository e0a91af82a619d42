"""The quota gate: LLM calls stop at the monthly limit exactly, even when they overlap."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime

from agents_pipeline.quota import (
    INBOUND,
    TOKENS,
    Limits,
    QuotaGate,
    counter_key,
    month_of,
)
from tests.fakes.counters import DictCounters


def sequential_calls(costs: list[int], limit: int) -> int:
    """How many calls a one-at-a-time run makes: each starts while the total is under."""
    used = calls = 0
    for c in costs:
        if used >= limit:
            break
        used += c
        calls += 1
    return calls


async def run_concurrently(costs: list[int], limit: int, worst_case: int) -> tuple[int, int]:
    counters = DictCounters()
    gate = QuotaGate(counters)
    ws = uuid.uuid4()
    made = 0
    rng = random.Random(7)

    async def one(cost: int) -> None:
        nonlocal made
        await asyncio.sleep(rng.random() / 200)
        async with gate.llm_call(ws, Limits(llm_tokens=limit), "2026-11", worst_case) as p:
            if p.refused is None:
                made += 1
                await asyncio.sleep(rng.random() / 100)
                p.record(cost)

    await asyncio.gather(*(one(c) for c in costs))
    return made, counters.get(counter_key(ws, "2026-11", TOKENS))


async def test_overlapping_calls_stop_exactly_where_one_at_a_time_would() -> None:
    costs = [100] * 40
    made, used = await run_concurrently(costs, limit=1000, worst_case=150)
    assert made == sequential_calls(costs, 1000) == 10
    assert used == 1000


async def test_a_limit_between_calls_lets_the_crossing_call_through_and_no_more() -> None:
    costs = [100] * 40
    made, used = await run_concurrently(costs, limit=950, worst_case=150)
    assert made == 10  # the tenth call starts at 900 < 950 and crosses; the eleventh never starts
    assert used == 1000


async def test_calls_overlap_while_their_worst_cases_fit() -> None:
    counters = DictCounters()
    gate = QuotaGate(counters)
    ws = uuid.uuid4()
    inside = 0
    peak = 0

    async def one() -> None:
        nonlocal inside, peak
        async with gate.llm_call(ws, Limits(llm_tokens=10_000), "2026-11", 100) as p:
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1
            p.record(50)

    await asyncio.gather(*(one() for _ in range(8)))
    assert peak == 8  # far from the limit: no call waits for another


async def test_unlimited_counts_without_waiting() -> None:
    counters = DictCounters()
    gate = QuotaGate(counters)
    ws = uuid.uuid4()
    async with gate.llm_call(ws, Limits(), "2026-11", 10**9) as p:
        assert p.refused is None
        p.record(42)
    assert counters.get(counter_key(ws, "2026-11", TOKENS)) == 42


async def test_a_failed_call_releases_its_reservation() -> None:
    counters = DictCounters()
    gate = QuotaGate(counters)
    ws = uuid.uuid4()
    limits = Limits(llm_tokens=100)
    try:
        async with gate.llm_call(ws, limits, "2026-11", 90):
            raise RuntimeError("provider down")
    except RuntimeError:
        pass
    async with gate.llm_call(ws, limits, "2026-11", 90) as p:
        assert p.refused is None  # nothing was spent, the next call goes


def test_inbound_limit_counts_the_messages_the_agent_sees() -> None:
    ws = uuid.uuid4()
    month = month_of(datetime(2026, 11, 25, tzinfo=UTC))
    gate = QuotaGate(DictCounters())
    limits = Limits(inbound_messages=3)
    answers = [gate.inbound_refusal(ws, limits, month) for _ in range(5)]
    assert [a is None for a in answers] == [True, True, True, False, False]
    assert answers[3] is not None and answers[3].refused == INBOUND
    assert answers[3].used == 4 and answers[3].limit == 3


def test_months_are_utc_calendar_months() -> None:
    assert month_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == "2026-12"


def test_a_retried_message_gets_its_first_answer_and_counts_once() -> None:
    ws = uuid.uuid4()
    counters = DictCounters()
    gate = QuotaGate(counters)
    limits = Limits(inbound_messages=1)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert gate.inbound_refusal(ws, limits, "2026-11", first) is None
    assert gate.inbound_refusal(ws, limits, "2026-11", first) is None  # a retry: same answer
    refused = gate.inbound_refusal(ws, limits, "2026-11", second)
    assert refused is not None and refused.used == 2
