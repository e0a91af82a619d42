"""Dead letters: kept (with the conversation they leave unanswered) and replayed.

The ``deadletter`` topic's agent calls ``keep`` for each dead letter: one row per failed
record (``storage.deadletters``), and, when the record was an inbound message on its way
to an answer, its conversation is flagged as needing a person. ``replay`` (REST and CLI)
re-produces the failed record to the topic of the stage that failed it; the stages'
idempotency keys (one run, one bot reply, one delivery per inbound message) keep a replay
from answering twice. A record that cannot be rebuilt raises ``NotReplayable``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError

from storage import deadletters as store
from streams import topics
from streams.contracts import (
    DeadLetter,
    DocumentIngest,
    GeneratedReply,
    InboundMessage,
    ResolvedMessage,
    RetrievedMessage,
    SendRequest,
    StatusUpdate,
)

# Stages whose failure leaves an inbound message unanswered (send: a bot reply's).
ANSWERING_STAGES = frozenset({"resolve", "retrieve", "generate", "reply", "send"})


@dataclass(frozen=True)
class Source:
    """Where a stage reads its records: the topic and the record's contract."""

    topic: str
    model: type[BaseModel]
    by_workspace: bool = False  # sent to the workspace's partition (messages.retrieved)


# The stage a dead letter names -> where its record came from. normalize is missing: its
# records are raw webhooks whose headers are not kept (the provider delivers them again).
SOURCES: dict[str, Source] = {
    "resolve": Source(topics.MESSAGES_NORMALIZED, InboundMessage),
    "status": Source(topics.MESSAGES_STATUS, StatusUpdate),
    "retrieve": Source(topics.MESSAGES_RESOLVED, ResolvedMessage),
    "generate": Source(topics.MESSAGES_RETRIEVED, RetrievedMessage, by_workspace=True),
    "reply": Source(topics.MESSAGES_GENERATED, GeneratedReply),
    "send": Source(topics.MESSAGES_SEND, SendRequest),
    "ingest": Source(topics.DOCUMENTS_INGEST, DocumentIngest),
}


class NotReplayable(Exception):
    """The dead letter's record cannot be produced again (the reason says why)."""


@dataclass(frozen=True)
class ReplayRecord:
    """The record a replay produces."""

    topic: str
    key: bytes
    value: bytes
    partition: int | None  # None: the key's partition
    event: BaseModel


Produce = Callable[[ReplayRecord], Awaitable[None]]


def payload_text(payload: Any) -> str:
    """A dead letter's payload as stored: the record's text as the stage read it, or the JSON
    of a payload a stage gave as an object (send's request)."""
    if isinstance(payload, str):
        return payload
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)


def _parsed(payload: str) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def payload_view(payload: str) -> Any:
    """The payload as the API shows it: its JSON when it is JSON, else its text."""
    parsed = _parsed(payload)
    return payload if parsed is None else parsed


@dataclass(frozen=True)
class Hint:
    """What a dead letter says about the conversation it leaves unanswered."""

    conversation_id: UUID | None = None
    contact_external_id: str | None = None


def conversation_hint(dead: DeadLetter) -> Hint | None:
    """The conversation of an inbound message that will not be answered, as far as the
    payload tells it; None when the dead letter is no such message (a status, a document,
    a human's reply, a record nobody could read)."""
    if dead.stage not in ANSWERING_STAGES:
        return None
    data = dead.payload if isinstance(dead.payload, dict) else _parsed(payload_text(dead.payload))
    if not isinstance(data, dict):
        return None
    if dead.stage == "send" and not data.get("in_reply_to"):
        return None  # a human's reply: its author sees it failed
    conversation = data.get("conversation_id")
    if conversation:
        try:
            return Hint(conversation_id=UUID(str(conversation)))
        except ValueError:
            return None
    contact = data.get("contact")
    if isinstance(contact, dict) and isinstance(contact.get("external_id"), str):
        return Hint(contact_external_id=contact["external_id"])
    return None


def attention_reason(dead: DeadLetter) -> str:
    """The reason a conversation shows: ``deadletter:<stage>[:<error code>]``."""
    reason = f"deadletter:{dead.stage}"
    return f"{reason}:{dead.error_code}" if dead.error_code else reason


def metric_reason(stage: str) -> str:
    """The ``reason`` label of the needing-attention counter (bounded: one per stage)."""
    return f"deadletter_{stage}" if stage in SOURCES or stage == "normalize" else "deadletter"


@dataclass(frozen=True)
class Kept:
    """What keeping one dead letter did."""

    row: dict[str, Any] | None  # None: a repeat of a dead letter already kept
    new: bool
    flagged: bool  # a conversation started needing a person


async def keep(pool: AsyncConnectionPool, dead: DeadLetter) -> Kept:
    """Store a dead letter (once per failed record) and flag the conversation it leaves
    unanswered, in one transaction."""
    hint = conversation_hint(dead)
    async with pool.connection() as conn, conn.transaction():
        conversation_id = hint.conversation_id if hint else None
        if (
            hint is not None
            and conversation_id is None
            and hint.contact_external_id
            and dead.workspace_id is not None
            and dead.channel_id is not None
        ):
            conversation_id = await store.find_conversation(
                conn,
                workspace_id=dead.workspace_id,
                channel_id=dead.channel_id,
                contact_external_id=hint.contact_external_id,
            )
        row, new = await store.record(
            conn,
            event_key=dead.event_key,
            stage=dead.stage,
            reason=dead.reason,
            error_code=dead.error_code,
            trace_id=dead.trace_id,
            workspace_id=dead.workspace_id,
            channel_id=dead.channel_id,
            conversation_id=conversation_id,
            payload=payload_text(dead.payload),
            failed_at=dead.failed_at,
        )
        flagged = False
        if row is not None and row["conversation_id"] is not None and hint is not None:
            flagged = bool(
                await store.flag_conversation(
                    conn,
                    workspace_id=row["workspace_id"],
                    conversation_id=row["conversation_id"],
                    reason=attention_reason(dead),
                    deadletter_id=row["id"],
                )
            )
    return Kept(row, new, flagged)


def replay_record(row: dict[str, Any], partitions: int | None) -> ReplayRecord:
    """The record to produce again for a stored dead letter; NotReplayable says why not.

    ``partitions``: the topics' partition count, to place a record that goes to its
    workspace's partition (None: only check that the record can be rebuilt)."""
    source = SOURCES.get(row["stage"])
    if source is None:
        if row["stage"] == "normalize":
            raise NotReplayable(
                "a webhook that could not be normalized is not kept whole; the provider "
                "must deliver it again"
            )
        raise NotReplayable(f"records of stage {row['stage']!r} cannot be replayed")
    try:
        event = source.model.model_validate_json(row["payload"])
    except ValidationError as exc:
        raise NotReplayable(
            f"the payload is not a {source.model.__name__} "
            f"({exc.error_count()} problems): the stage could not read it either"
        ) from None
    workspace = getattr(event, "workspace_id", None)
    if row["workspace_id"] is None or workspace != row["workspace_id"]:
        raise NotReplayable("the payload belongs to no workspace, or to another one")
    key = str(event.document_id) if isinstance(event, DocumentIngest) else event.key  # type: ignore[attr-defined]
    partition = None
    if source.by_workspace and partitions is not None:
        from streams.partitions import workspace_partition  # imports faust: only when needed

        partition = workspace_partition(workspace, partitions)
    return ReplayRecord(
        topic=source.topic,
        key=key.encode(),
        value=row["payload"].encode(),  # as the stage read it: a new failure keeps its key
        partition=partition,
        event=event,
    )


async def replay(
    pool: AsyncConnectionPool,
    *,
    deadletter_id: UUID,
    workspace_id: UUID | None,
    produce: Produce,
    partitions: int,
) -> tuple[dict[str, Any], ReplayRecord] | None:
    """Produce a dead letter's record again (None: no such dead letter, in this workspace
    when one is given). A failed bot reply's message goes back to ``pending`` first, since
    the send stage never takes a failed one; its claim still delivers it at most once.
    The conversation's flag set by this dead letter is cleared: a person acted on it, and
    a new failure flags it again."""
    async with pool.connection() as conn:
        row = await store.get(conn, deadletter_id=deadletter_id, workspace_id=workspace_id)
    if row is None:
        return None
    record = replay_record(row, partitions)
    if isinstance(record.event, SendRequest):
        async with pool.connection() as conn:
            await store.rearm_send(
                conn, workspace_id=record.event.workspace_id, message_id=record.event.outbound_id
            )
    await produce(record)
    async with pool.connection() as conn, conn.transaction():
        row = await store.mark_replayed(conn, deadletter_id=deadletter_id)
        await store.clear_attention(
            conn, workspace_id=row["workspace_id"], deadletter_id=deadletter_id
        )
    return row, record


def deadletter_view(row: dict[str, Any]) -> dict[str, Any]:
    """A dead letter as the API and the CLI show it."""
    try:
        replay_record(row, None)
        replayable, why = True, None
    except NotReplayable as exc:
        replayable, why = False, str(exc)
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "channel_id": row["channel_id"],
        "conversation_id": row["conversation_id"],
        "stage": row["stage"],
        "reason": row["reason"],
        "error_code": row["error_code"],
        "trace_id": row["trace_id"],
        "payload": payload_view(row["payload"]),
        "failures": row["failures"],
        "failed_at": row["failed_at"],
        "replayable": replayable,
        "not_replayable_reason": why,
        "replay_count": row["replay_count"],
        "replayed_at": row["replayed_at"],
        "created_at": row["created_at"],
    }
