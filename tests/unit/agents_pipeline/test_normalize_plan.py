"""normalize's plan of a batch: a record it cannot read is dead-lettered alone, in its place."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agents_pipeline.normalize import RawRecord, plan_batch
from streams.contracts import InboundMessage, RawHeaders

WS, CH = uuid.uuid4(), uuid.uuid4()


def record(body: bytes, trace: str) -> RawRecord:
    headers = RawHeaders.encode(
        provider="sandbox",
        channel_id=CH,
        workspace_id=WS,
        received_at=datetime.now(UTC),
        trace_id=trace,
        idempotency_key=f"k-{trace}",
        message_id=f"sbx-{trace}",
    )
    return RawRecord(headers, body, partition=3)


def test_poison_records_are_dead_lettered_in_their_place() -> None:
    records = [
        record(b'{"from": "ana", "text": "oi"}', "t1"),
        record(rb'{"from": "ana", "text": "oi\u0000"}', "t2"),
        record(rb'{"from": "ana", "text": "oi \ud800"}', "t3"),
        record(b'{"from": "ana", "text": "oi", "n": NaN}', "t4"),
        record(b"[" * 1000 + b"]" * 1000, "t5"),
        record(b'{"from": "bia", "text": "tudo bem?"}', "t6"),
        RawRecord([("provider", b"sandbox")], b"{}", partition=3),  # headers it cannot read
    ]
    result = plan_batch(records, seen=lambda _: False)
    codes = [d.error_code if d else None for d in result.dead_by_record]
    assert codes == [
        None,
        "unsupported_character",
        "unsupported_character",
        "invalid_json",
        "json_too_deep",
        None,
        "ValidationError",
    ]
    assert [d.trace_id for d in result.dead_by_record if d] == ["t2", "t3", "t4", "t5", "unknown"]
    texts = [e.text for p in result.forward for e in p.events if isinstance(e, InboundMessage)]
    assert texts == ["oi", "tudo bem?"]
    # What a dead letter of the stage names, read from the headers (None when unreadable).
    assert (records[1].trace_id, records[1].workspace_id, records[1].channel_id) == ("t2", WS, CH)
    assert records[-1].trace_id is None and records[-1].partition == 3
