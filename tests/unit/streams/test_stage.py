"""stage_agent's batch helpers that need no broker."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from streams.agents.stage import Out, _add_up_usage
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
