"""Dead letters' plain functions: their identity, the conversation they leave unanswered,
and the record a replay produces (or why it cannot)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from agents_pipeline.deadletters import (
    SOURCES,
    NotReplayable,
    attention_reason,
    conversation_hint,
    deadletter_view,
    metric_reason,
    payload_text,
    payload_view,
    replay_record,
)
from streams.contracts import (
    DeadLetter,
    DocumentIngest,
    GeneratedReply,
    InboundMessage,
    ResolvedMessage,
    RetrievedMessage,
    SendRequest,
)
from streams.partitions import workspace_partition

WS = uuid.uuid4()
CH = uuid.uuid4()
CONV = uuid.uuid4()
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def resolved(cls: type[ResolvedMessage] = ResolvedMessage, **extra: Any) -> Any:
    """A resolved-message-shaped event of class ``cls``."""
    return cls(
        trace_id="t1",
        workspace_id=WS,
        channel_id=CH,
        provider="sandbox",
        contact_id=uuid.uuid4(),
        contact_external_id="ana",
        conversation_id=CONV,
        message_id=uuid.uuid4(),
        text="Oi",
        type="text",
        agent_id=uuid.uuid4(),
        agent_version_id=uuid.uuid4(),
        received_at=NOW,
        **extra,
    )


def inbound() -> InboundMessage:
    """A canonical inbound message."""
    return InboundMessage(
        trace_id="t1",
        event_key="k",
        workspace_id=WS,
        channel_id=CH,
        provider="sandbox",
        provider_message_id="m1",
        contact={"external_id": "ana", "alt_ids": []},
        type="text",
        text="Oi",
        sent_at=NOW,
        received_at=NOW,
    )


def send_request(in_reply_to: uuid.UUID | None) -> SendRequest:
    """A bot reply (with ``in_reply_to``) or a human's."""
    return SendRequest(
        trace_id="t1",
        workspace_id=WS,
        channel_id=CH,
        provider="sandbox",
        conversation_id=CONV,
        contact_external_id="ana",
        outbound_id=uuid.uuid4(),
        in_reply_to=in_reply_to,
        author="bot" if in_reply_to else "human",
        text="Olá",
    )


def dead(stage: str, payload: Any, **extra: Any) -> DeadLetter:
    """A dead letter as a stage writes it."""
    fields: dict[str, Any] = {
        "trace_id": "t1",
        "reason": "boom",
        "error_code": "internal_error",
        "workspace_id": WS,
        "channel_id": CH,
    }
    return DeadLetter(stage=stage, payload=payload, **{**fields, **extra})


def row(stage: str, payload: str, workspace_id: uuid.UUID | None = WS) -> dict[str, Any]:
    """A stored dead letter."""
    return {
        "id": uuid.uuid4(),
        "workspace_id": workspace_id,
        "channel_id": CH,
        "conversation_id": None,
        "stage": stage,
        "reason": "boom",
        "error_code": "x",
        "trace_id": "t1",
        "payload": payload,
        "failures": 1,
        "failed_at": NOW,
        "replay_count": 0,
        "replayed_at": None,
        "created_at": NOW,
    }


# --- identity ----------------------------------------------------------------------------


def test_the_same_failed_record_has_the_same_key_across_the_topic() -> None:
    req = send_request(uuid.uuid4()).model_dump(mode="json")
    first = dead("send", req)
    again = dead("send", dict(reversed(list(req.items()))), failed_at=datetime.now(UTC))
    assert first.event_key == again.event_key and first.event_key.startswith("send:")
    read_back = DeadLetter.model_validate_json(first.model_dump_json())
    assert read_back.event_key == first.event_key


@pytest.mark.parametrize(
    "change",
    [{"stage": "reply"}, {"workspace_id": None}, {"channel_id": uuid.uuid4()}, {"payload": "y"}],
)
def test_another_record_has_another_key(change: dict[str, Any]) -> None:
    base = {"stage": "generate", "workspace_id": WS, "channel_id": CH, "payload": "x"}
    one = DeadLetter(trace_id="t", reason="r", **base)
    other = DeadLetter(trace_id="t", reason="r", **{**base, **change})
    assert one.event_key != other.event_key


def test_a_given_key_is_kept() -> None:
    assert dead("send", "x", event_key="mine").event_key == "mine"


def test_payloads_are_stored_as_text_and_shown_as_json_when_they_are() -> None:
    assert payload_text('{"a": 1}') == '{"a": 1}'
    assert json.loads(payload_text({"a": "é"})) == {"a": "é"}
    assert payload_view('{"a": 1}') == {"a": 1}
    assert payload_view("{not json") == "{not json"


# --- the conversation left unanswered --------------------------------------------------


@pytest.mark.parametrize("stage", ["retrieve", "generate", "reply"])
def test_a_conversation_stage_names_its_conversation(stage: str) -> None:
    hint = conversation_hint(dead(stage, resolved().model_dump_json()))
    assert hint is not None and hint.conversation_id == CONV


def test_a_message_not_resolved_names_its_contact() -> None:
    hint = conversation_hint(dead("resolve", inbound().model_dump_json()))
    assert hint is not None and hint.conversation_id is None
    assert hint.contact_external_id == "ana"


def test_a_bot_reply_flags_a_human_reply_does_not() -> None:
    bot = conversation_hint(dead("send", send_request(uuid.uuid4()).model_dump(mode="json")))
    assert bot is not None and bot.conversation_id == CONV
    assert conversation_hint(dead("send", send_request(None).model_dump(mode="json"))) is None


@pytest.mark.parametrize(
    ("stage", "payload"),
    [
        ("status", json.dumps({"conversation_id": str(CONV)})),
        ("ingest", json.dumps({"conversation_id": str(CONV)})),
        ("normalize", '{"entry": []}'),
        ("generate", "{truncated"),
        ("generate", '{"conversation_id": "not-a-uuid"}'),
        ("generate", "[1, 2]"),
    ],
)
def test_other_dead_letters_flag_nothing(stage: str, payload: str) -> None:
    assert conversation_hint(dead(stage, payload)) is None


def test_reasons() -> None:
    assert attention_reason(dead("send", "x")) == "deadletter:send:internal_error"
    assert attention_reason(dead("send", "x", error_code=None)) == "deadletter:send"
    assert metric_reason("send") == "deadletter_send"
    assert metric_reason("normalize") == "deadletter_normalize"
    assert metric_reason("anything " * 20) == "deadletter"  # bounded label values


# --- replays ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "event", "topic"),
    [
        ("resolve", inbound(), "messages.normalized"),
        ("retrieve", resolved(), "messages.resolved"),
        ("generate", resolved(RetrievedMessage), "messages.retrieved"),
        (
            "reply",
            resolved(GeneratedReply, run_id=uuid.uuid4(), reply_text="Olá"),
            "messages.generated",
        ),
        ("send", send_request(uuid.uuid4()), "messages.send"),
    ],
)
def test_a_conversation_record_goes_back_to_its_stage_with_its_key(
    stage: str, event: Any, topic: str
) -> None:
    raw = event.model_dump_json()
    record = replay_record(row(stage, raw), 4)
    assert record.topic == topic == SOURCES[stage].topic
    assert record.key == f"{CH}:ana".encode() and record.value == raw.encode()
    expected = workspace_partition(WS, 4) if stage == "generate" else None
    assert record.partition == expected


def test_a_document_goes_back_by_its_id() -> None:
    ev = DocumentIngest(
        trace_id="t", workspace_id=WS, knowledge_base_id=uuid.uuid4(), document_id=uuid.uuid4()
    )
    record = replay_record(row("ingest", ev.model_dump_json()), 4)
    assert record.topic == "documents.ingest" and record.key == str(ev.document_id).encode()


def test_a_send_payload_stored_as_json_text_replays() -> None:
    req = send_request(uuid.uuid4())
    record = replay_record(row("send", payload_text(req.model_dump(mode="json"))), 4)
    assert record.event == req


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (row("normalize", '{"entry": []}'), "deliver it again"),
        (row("usage", "{}"), "cannot be replayed"),
        (row("generate", "{truncat"), "not a RetrievedMessage"),
        (row("retrieve", resolved().model_dump_json(), workspace_id=uuid.uuid4()), "another"),
        (row("retrieve", resolved().model_dump_json(), workspace_id=None), "no workspace"),
    ],
)
def test_what_cannot_be_replayed_says_why(stored: dict[str, Any], why: str) -> None:
    with pytest.raises(NotReplayable, match=why):
        replay_record(stored, 4)
    view = deadletter_view(stored)
    assert view["replayable"] is False and why in view["not_replayable_reason"]


def test_the_view_shows_a_replayable_record() -> None:
    view = deadletter_view(row("retrieve", resolved().model_dump_json()))
    assert view["replayable"] is True and view["not_replayable_reason"] is None
    assert view["payload"]["conversation_id"] == str(CONV)
