"""The statistics fold and the merge of two copies of one workspace's document."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agents_pipeline import stats
from streams.contracts import UsageEvent

WS = uuid.uuid4()
CH_A, CH_B = uuid.uuid4(), uuid.uuid4()


def event(kind: str, amount: int = 1, **extra: object) -> UsageEvent:
    now = datetime.now(UTC)
    return UsageEvent(
        trace_id="t",
        event_key=f"{kind}:{uuid.uuid4()}",
        workspace_id=WS,
        kind=kind,
        amount=amount,
        day=now.date(),
        occurred_at=now,
        **extra,  # type: ignore[arg-type]
    )


HISTORY = [
    event("inbound_messages", channel_id=CH_A),
    event("conversations_opened", channel_id=CH_A),
    event("agent_runs", outcome="ok", latency_ms=120, cost_usd=0.0002),
    event("llm_prompt_tokens", 80),
    event("llm_completion_tokens", 20),
    event("outbound_messages", channel_id=CH_A),
    event("inbound_messages", channel_id=CH_B),
    event("agent_runs", outcome="quota_exceeded", latency_ms=1),
    event("conversations_closed", channel_id=CH_A),
]


def fold(events: list[UsageEvent]) -> stats.Stats | None:
    doc = None
    for ev in events:
        doc = stats.apply(doc, ev)
    return doc


def test_folded_counts_the_events_a_document_holds() -> None:
    assert stats.folded(None) == 0
    assert stats.folded(fold(HISTORY[:4])) == 4
    assert stats.folded({"channels": {}}) == 0  # a document from before the count


def test_merging_two_prefixes_of_one_history_gives_the_longer_either_way() -> None:
    for cut in range(len(HISTORY) + 1):
        short, full = fold(HISTORY[:cut]), fold(HISTORY)
        assert stats.merge(short, full) == full
        assert stats.merge(full, short) == full


def test_merge_keeps_what_only_one_copy_has_and_does_not_share_it() -> None:
    only_b = fold([HISTORY[6]])  # channel B only
    only_a = fold(HISTORY[:1])  # channel A only
    merged = stats.merge(only_a, only_b)
    assert merged is not None and set(merged["channels"]) == {str(CH_A), str(CH_B)}
    merged["channels"][str(CH_B)]["inbound"] = 99
    assert only_b is not None and only_b["channels"][str(CH_B)]["inbound"] == 1
    assert stats.merge(None, None) is None
    assert stats.merge(None, only_a) == only_a and stats.merge(only_a, None) == only_a
