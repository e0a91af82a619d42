"""stage_agent's batch helpers that need no broker."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import psycopg
import pytest
from pydantic import BaseModel

from streams.agents.stage import Out, _add_up_usage, handle_events
from streams.contracts import AuditEvent, UsageEvent

WS = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER = uuid.UUID("22222222-2222-4222-8222-222222222222")
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def use(ws: uuid.UUID, kind: str, key: str, amount: int, minute: int = 0) -> Out:
    ev = UsageEvent(
        trace_id=f"t-{key}",
        event_key=f"{kind}:{key}",
        workspace_id=ws,
        kind=kind,  # type: ignore[arg-type]
        amount=amount,
        day=date(2026, 3, 1),
        occurred_at=T0 + timedelta(minutes=minute),
    )
    return Out("usage", ev, str(ws))  # type: ignore[arg-type]


def test_usage_of_a_batch_is_added_up_per_workspace_day_and_kind() -> None:
    audit = Out(
        "audit",  # type: ignore[arg-type]
        AuditEvent(
            trace_id="t",
            event_key="a",
            workspace_id=WS,
            actor="system",
            action="x",
            object_type="message",
            occurred_at=T0,
        ),
        str(WS),
    )
    outs = [
        use(WS, "inbound_messages", "m1", 1),
        audit,
        use(WS, "llm_prompt_tokens", "m1", 30),
        use(WS, "inbound_messages", "m2", 1, minute=5),
        use(OTHER, "inbound_messages", "m3", 1),
        use(WS, "llm_prompt_tokens", "m2", 12),
        use(WS, "inbound_messages", "m4", 1, minute=2),
    ]
    merged = _add_up_usage(outs)
    assert [o.value.event_key for o in merged] == [
        "inbound_messages:m1+2",
        "a",
        "llm_prompt_tokens:m1+1",
        "inbound_messages:m3",
    ]
    inbound = merged[0].value
    assert isinstance(inbound, UsageEvent)
    assert (inbound.amount, inbound.trace_id, inbound.occurred_at) == (
        3,
        "t-m1",
        T0 + timedelta(minutes=5),
    )
    assert merged[2].value.amount == 42  # type: ignore[union-attr]
    assert merged[3].value.amount == 1 and merged[3].key == str(OTHER)  # type: ignore[union-attr]
    totals: dict[tuple, int] = {}
    for o in outs:
        if isinstance(o.value, UsageEvent):
            k = (o.value.workspace_id, o.value.kind)
            totals[k] = totals.get(k, 0) + o.value.amount
    assert totals == {
        (o.value.workspace_id, o.value.kind): o.value.amount  # type: ignore[union-attr]
        for o in merged
        if isinstance(o.value, UsageEvent)
    }


def test_no_usage_leaves_the_outputs_alone() -> None:
    outs = [use(WS, "inbound_messages", "m1", 1)]
    assert _add_up_usage(outs) == outs
    assert _add_up_usage([]) == []


class FakeApp:
    """What handle_events reads of the app: the deadletter topic."""

    def __init__(self) -> None:
        self.topics_ = SimpleNamespace(deadletter="deadletter", next="next")


def item(key: str, text: str) -> tuple[bytes, Note]:
    note = Note(trace_id=f"t-{text}", text=text)
    return note.model_dump_json().encode(), note


class Note(BaseModel):
    """A minimal event."""

    trace_id: str
    text: str


async def test_one_by_one_keeps_each_key_in_order_across_concurrent_keys() -> None:
    seen: list[str] = []

    async def handle(ev: Note) -> list[Out]:
        await asyncio.sleep(random.random() / 200)  # keys interleave
        seen.append(ev.text)
        return [Out("next", ev, ev.text[0])]  # type: ignore[arg-type]

    texts = ["a1", "b1", "a2", "c1", "a3", "b2", "c2", "a4"]
    items = [item(t[0], t) for t in texts]
    keys = [t[0].encode() for t in texts]
    outs = await handle_events(FakeApp(), "s", handle, None, items, keys, concurrency=2)  # type: ignore[arg-type]
    assert sorted(o.value.text for o in outs) == sorted(texts)  # type: ignore[attr-defined]
    for k in "abc":
        assert [t for t in seen if t[0] == k] == [t for t in texts if t[0] == k]
        assert [o.value.text for o in outs if o.key == k] == [t for t in texts if t[0] == k]  # type: ignore[attr-defined]


async def test_a_failing_batch_is_handled_one_by_one_and_only_the_bad_event_dead_letters() -> None:
    async def handle(ev: Note) -> list[Out]:
        if ev.text == "bad":
            raise ValueError("cannot")
        return [Out("next", ev, None)]  # type: ignore[arg-type]

    async def handle_batch(evs: list[Note]) -> list[list[Out]]:
        if any(e.text == "bad" for e in evs):
            raise ValueError("one of them cannot")
        return [[Out("next", e, None)] for e in evs]  # type: ignore[arg-type]

    good = [item("a", "x1"), item("b", "y1")]
    outs = await handle_events(FakeApp(), "s", handle, handle_batch, good, [b"a", b"b"])  # type: ignore[arg-type]
    assert [(o.topic, o.value.text) for o in outs] == [("next", "x1"), ("next", "y1")]  # type: ignore[attr-defined]

    mixed = [item("a", "x1"), item("a", "bad"), item("b", "y1")]
    outs = await handle_events(FakeApp(), "s", handle, handle_batch, mixed, [b"a", b"a", b"b"])  # type: ignore[arg-type]
    assert [o.topic for o in outs] == ["next", "deadletter", "next"]
    dead = outs[1].value
    assert dead.error_code == "internal_error" and "cannot" in dead.reason  # type: ignore[attr-defined]
    assert dead.trace_id == "t-bad"  # type: ignore[attr-defined]


async def test_transient_batch_failures_are_retried_not_split() -> None:
    calls = 0

    async def handle(ev: Note) -> list[Out]:
        raise AssertionError("the batch handler must be retried, not split")

    async def handle_batch(evs: list[Note]) -> list[list[Out]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database away")
        return [[] for _ in evs]

    items = [item("a", "x1")]
    assert await handle_events(FakeApp(), "s", handle, handle_batch, items, [b"a"]) == []  # type: ignore[arg-type]
    assert calls == 2


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
        psycopg.errors.ProgramLimitExceeded("index row requires 10016 bytes"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_data_error_splits_the_batch_at_once(error: Exception) -> None:
    batches = 0

    async def handle(ev: Note) -> list[Out]:
        if ev.text == "bad":
            raise error
        return [Out("next", ev, None)]  # type: ignore[arg-type]

    async def handle_batch(evs: list[Note]) -> list[list[Out]]:
        nonlocal batches
        batches += 1
        if any(e.text == "bad" for e in evs):
            raise error  # one multi-row statement: the bad row fails all of them
        return [[Out("next", e, None)] for e in evs]  # type: ignore[arg-type]

    mixed = [item("a", "x1"), item("b", "bad"), item("c", "y1")]
    outs = await asyncio.wait_for(
        handle_events(FakeApp(), "s", handle, handle_batch, mixed, [b"a", b"b", b"c"]),  # type: ignore[arg-type]
        5,
    )
    assert batches == 1  # not retried as if the database were away
    assert sorted((o.topic, o.value.trace_id) for o in outs) == [  # type: ignore[attr-defined]
        ("deadletter", "t-bad"),
        ("next", "t-x1"),
        ("next", "t-y1"),
    ]
    dead = next(o.value for o in outs if o.topic == "deadletter")
    assert dead.error_code == "data_error"  # type: ignore[attr-defined]


async def test_an_output_that_cannot_be_encoded_fails_only_its_event() -> None:
    async def handle(ev: Note) -> list[Out]:
        # A lone surrogate: UTF-8 cannot encode it, so the record could never be produced.
        text = "oi \ud800" if ev.text == "bad" else ev.text
        return [Out("next", Note(trace_id=ev.trace_id, text=text), None)]  # type: ignore[arg-type]

    async def handle_batch(evs: list[Note]) -> list[list[Out]]:
        return [await handle(e) for e in evs]

    mixed = [item("a", "x1"), item("a", "bad"), item("b", "y1")]
    for batch in (handle_batch, None):
        outs = await handle_events(FakeApp(), "s", handle, batch, mixed, [b"a", b"a", b"b"])  # type: ignore[arg-type]
        assert [o.topic for o in outs] == ["next", "deadletter", "next"]
        assert all(o.data is not None for o in outs if o.topic == "next")
        dead = outs[1].value
        assert dead.error_code == "data_error" and dead.trace_id == "t-bad"  # type: ignore[attr-defined]
        assert json.loads(dead.model_dump_json())["payload"]  # the dead letter itself encodes
