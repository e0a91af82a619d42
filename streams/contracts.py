"""Topic contracts: the value of every topic, as pydantic models, in one place.

Every event carries ``schema_version`` (bump it on an incompatible change, and
keep readers able to read the previous version while it is on the topics) and
the ``trace_id`` given by the gateway when the webhook was accepted.

Topics and their keys (see docs/ARCHITECTURE.md)::

    webhooks.raw         key channel_id               value: raw body bytes + RawHeaders
    messages.normalized  key channel_id:contact       InboundMessage
    messages.status      key channel_id:contact       StatusUpdate
    messages.resolved    key channel_id:contact       ResolvedMessage
    messages.retrieved   key channel_id:contact       RetrievedMessage
    messages.generated   key channel_id:contact       GeneratedReply
    messages.send        key channel_id:contact       SendRequest
    messages.sent        key channel_id:contact       SentMessage
    usage.events         key workspace_id             UsageEvent
    audit.events         key workspace_id             AuditEvent
    deadletter           key stage                    DeadLetter
    documents.ingest     key document_id              DocumentIngest

This module imports nothing from faust or aiokafka, so that stage code and the
gateway can use the contracts without a broker.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_serializer, model_validator

from streams.storable import scrub

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp on a topic is)."""
    return datetime.now(UTC)


class ProviderName(StrEnum):
    """The providers a channel can use; each has one implementation of the base interface."""

    WHATSAPP_CLOUD = "whatsapp_cloud"
    EVOLUTION = "evolution"
    SANDBOX = "sandbox"


class Contract(BaseModel):
    """Base of every topic value: versioned, strict about unknown fields, JSON-serialisable."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    trace_id: str = Field(description="Trace id given by the gateway; rides every event.")


def conversation_key(channel_id: UUID | str, contact_external_id: str) -> str:
    """Partition key that keeps one conversation's events in order end to end."""
    return f"{channel_id}:{contact_external_id}"


# --- webhooks.raw -------------------------------------------------------------------------


class RawHeaders(BaseModel):
    """Headers of a ``webhooks.raw`` record; the value is the request body, untouched.

    No secret ever goes here: no signature, token, API key or Authorization header.
    """

    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    channel_id: UUID
    workspace_id: UUID
    received_at: datetime
    trace_id: str
    idempotency_key: str = Field(description="Delivery key: client key, or sha256 of the body.")
    envelope: Literal["provider", "inbox"] = Field(
        default="provider",
        description="'provider': the body is the provider's webhook; 'inbox': the generic "
        "inbox envelope {channel_id, payload, idempotency_key?}.",
    )
    message_id: str | None = Field(
        default=None, description="Message id the gateway assigned (sandbox without one)."
    )

    def to_kafka(self) -> list[tuple[str, bytes]]:
        """Encode as Kafka record headers."""
        out: list[tuple[str, bytes]] = []
        for name, value in self.model_dump(mode="json").items():
            if value is not None:
                out.append((name, str(value).encode()))
        return out

    @staticmethod
    def encode(
        *,
        provider: str,
        channel_id: UUID | str,
        workspace_id: UUID | str,
        received_at: datetime,
        trace_id: str,
        idempotency_key: str,
        envelope: str = "provider",
        message_id: str | None = None,
    ) -> list[tuple[str, bytes]]:
        """The same headers as ``to_kafka``, built without a model: the gateway's hot path
        (a model and its JSON dump cost more than the rest of the headers' work)."""
        out = [
            ("provider", provider.encode()),
            ("channel_id", str(channel_id).encode()),
            ("workspace_id", str(workspace_id).encode()),
            ("received_at", received_at.isoformat().encode()),
            ("trace_id", trace_id.encode()),
            ("idempotency_key", idempotency_key.encode()),
            ("envelope", envelope.encode()),
        ]
        if message_id is not None:
            out.append(("message_id", message_id.encode()))
        return out

    @classmethod
    def from_kafka(cls, headers: Any) -> RawHeaders:
        """Decode Kafka record headers (a list of pairs or a mapping)."""
        items = headers.items() if hasattr(headers, "items") else headers
        data = {k: (v.decode() if isinstance(v, bytes | bytearray) else v) for k, v in items}
        return cls.model_validate(data)


# --- canonical messages (messages.normalized / messages.status) ---------------------------

MessageType = Literal[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "unsupported",
]


class ContactRef(BaseModel):
    """Who a message is from (inbound) or to (outbound), as the provider names them.

    ``external_id`` is the stable id we key the contact on; ``alt_ids`` are other
    identifiers of the same person (Evolution's ``@lid`` with ``remoteJidAlt``,
    Cloud's ``user_id`` beside ``wa_id``). ``phone`` may be unknown.
    """

    external_id: str
    alt_ids: list[str] = Field(default_factory=list)
    phone: str | None = None
    name: str | None = None


class Media(BaseModel):
    """A media attachment: an id to fetch later (or a URL), never the bytes."""

    id: str | None = None
    url: str | None = None
    mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None
    sha256: str | None = None
    voice: bool = False


class Location(BaseModel):
    """A shared location."""

    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None
    url: str | None = None


class ContactCard(BaseModel):
    """A contact card shared in a message."""

    name: str | None = None
    phones: list[str] = Field(default_factory=list)


class Reply(BaseModel):
    """A button, list or template quick-reply answer."""

    kind: Literal["button_reply", "list_reply", "template_button"]
    id: str | None = None
    title: str | None = None
    description: str | None = None


class Reaction(BaseModel):
    """An emoji reaction to an earlier message (empty emoji: reaction removed)."""

    message_id: str
    emoji: str | None = None


class InboundMessage(Contract):
    """A canonical message seen on a channel (value of ``messages.normalized``).

    ``from_me`` marks a message sent from the business's own number (an echo of
    ours, or a person answering from the phone): it is stored as outbound, never
    answered.
    """

    event_key: str = Field(description="Per-item idempotency key (provider message id based).")
    workspace_id: UUID
    channel_id: UUID
    provider: ProviderName
    provider_message_id: str
    from_me: bool = False
    contact: ContactRef
    type: MessageType
    text: str | None = Field(default=None, description="Text, caption or reply title.")
    media: Media | None = None
    location: Location | None = None
    contacts: list[ContactCard] = Field(default_factory=list)
    reply: Reply | None = None
    reaction: Reaction | None = None
    context_message_id: str | None = Field(default=None, description="Message replied to.")
    sent_at: datetime = Field(description="When the provider says it was sent.")
    received_at: datetime = Field(description="When the gateway accepted the webhook.")
    webhook_event_id: UUID | None = None

    @property
    def key(self) -> str:
        """Partition key of this message's conversation."""
        return conversation_key(self.channel_id, self.contact.external_id)


StatusName = Literal["accepted", "sent", "delivered", "read", "failed", "deleted"]


class StatusUpdate(Contract):
    """A delivery status of one of our outbound messages (value of ``messages.status``)."""

    event_key: str
    workspace_id: UUID
    channel_id: UUID
    provider: ProviderName
    provider_message_id: str
    status: StatusName
    recipient_id: str | None = None
    occurred_at: datetime
    error_code: str | None = None
    error_title: str | None = None
    received_at: datetime

    @property
    def key(self) -> str:
        """Partition key: the recipient's conversation (or the message id when unknown)."""
        return conversation_key(self.channel_id, self.recipient_id or self.provider_message_id)


# --- pipeline stages ----------------------------------------------------------------------


class ResolvedMessage(Contract):
    """An inbound message stored and bound to its conversation and agent (``messages.resolved``)."""

    workspace_id: UUID
    channel_id: UUID
    provider: ProviderName
    contact_id: UUID
    contact_external_id: str
    contact_phone: str | None = None
    conversation_id: UUID
    message_id: UUID = Field(description="Our id of the stored inbound message.")
    text: str | None
    type: MessageType
    agent_id: UUID
    agent_version_id: UUID
    knowledge_base_ids: list[UUID] = Field(default_factory=list)
    received_at: datetime

    @property
    def key(self) -> str:
        """Partition key of this message's conversation."""
        return conversation_key(self.channel_id, self.contact_external_id)


class RetrievedChunk(BaseModel):
    """One passage the knowledge layer found, with its source."""

    chunk_id: UUID
    document_id: UUID
    document_title: str
    text: str
    score: float
    position: int


class RetrievedMessage(ResolvedMessage):
    """A resolved message with the context found for it (``messages.retrieved``).

    A search that failed (embedder down, unknown model, search error) does not stop the
    message: it goes on without knowledge and ``retrieval_error`` says why (kept on the run).
    """

    chunks: list[RetrievedChunk] = Field(default_factory=list)
    retrieval_error: str | None = Field(
        default=None, description="Why no knowledge was searched (None: the search ran)."
    )


class GeneratedReply(ResolvedMessage):
    """The agent's answer to one inbound message (``messages.generated``)."""

    run_id: UUID
    reply_text: str
    sources: list[RetrievedChunk] = Field(default_factory=list)


class SendRequest(Contract):
    """An outbound text to deliver (``messages.send``), from the bot or a human.

    ``outbound_id`` is our id of the outbound message row and the send's
    idempotency key: the send stage never delivers the same id twice.
    """

    workspace_id: UUID
    channel_id: UUID
    provider: ProviderName
    conversation_id: UUID
    contact_external_id: str
    contact_phone: str | None = None
    outbound_id: UUID
    in_reply_to: UUID | None = Field(default=None, description="Inbound message answered.")
    author: Literal["bot", "human"]
    text: str
    received_at: datetime | None = Field(
        default=None, description="When the inbound webhook was accepted (latency metric)."
    )

    @property
    def key(self) -> str:
        """Partition key of this message's conversation."""
        return conversation_key(self.channel_id, self.contact_external_id)


class SentMessage(Contract):
    """The outcome of a send (``messages.sent``)."""

    workspace_id: UUID
    channel_id: UUID
    conversation_id: UUID
    contact_external_id: str
    outbound_id: UUID
    status: Literal["sent", "failed", "blocked", "stored"]
    provider_message_id: str | None = None
    error_code: str | None = None  # ours (agents_pipeline/send_errors.py), never the provider's
    error_message: str | None = None  # our text for error_code
    provider_code: str | None = Field(
        default=None, description="The provider's numeric error code (Meta's), when it gave one."
    )
    occurred_at: datetime

    @property
    def key(self) -> str:
        """Partition key of this message's conversation."""
        return conversation_key(self.channel_id, self.contact_external_id)


# --- side topics --------------------------------------------------------------------------

UsageKind = Literal[
    "inbound_messages",
    "outbound_messages",
    "llm_prompt_tokens",
    "llm_completion_tokens",
    # Activity, counted for the admin views but not billed (not in usage_records):
    "conversations_opened",
    "conversations_closed",
    "agent_runs",
]


class UsageEvent(Contract):
    """A usage or activity increment (``usage.events``), counted per workspace and day.

    The billed kinds go to ``usage_records``; all kinds feed the workspace's stats
    table behind the admin views. Optional fields stay optional: readers of
    schema version 1 without them still parse.
    """

    event_key: str = Field(description="Unique per increment, so a replay counts once.")
    workspace_id: UUID
    kind: UsageKind
    amount: int
    day: date
    occurred_at: datetime
    channel_id: UUID | None = Field(default=None, description="Messages: their channel.")
    outcome: str | None = Field(default=None, description="agent_runs: the run's outcome.")
    latency_ms: int | None = Field(default=None, description="agent_runs: the run's latency.")
    cost_usd: float | None = Field(default=None, description="agent_runs: estimated cost.")


class AuditEvent(Contract):
    """Something a stage did that an admin must be able to read (``audit.events``)."""

    event_key: str
    workspace_id: UUID
    actor: str
    action: str
    object_type: str
    object_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime


class DeadLetter(Contract):
    """An event a stage could not process, with why (``deadletter``).

    ``event_key`` names the failed record (stage, workspace, channel and payload), so that
    the dead letter's writer keeps one row for it however often the record or its dead
    letter comes again; producers leave it empty and it is derived here.
    """

    stage: str
    reason: str
    error_code: str | None = None
    workspace_id: UUID | None = None
    channel_id: UUID | None = None
    payload: Any = None
    failed_at: datetime = Field(default_factory=utcnow)
    event_key: str = Field(default="", description="Identity of the failed record.")

    @model_validator(mode="after")
    def _derive_event_key(self) -> DeadLetter:
        if not self.event_key:
            self.event_key = dead_letter_key(
                self.stage, self.workspace_id, self.channel_id, self.payload
            )
        return self

    @field_serializer("reason", "payload")
    def _holdable(self, value: Any) -> Any:
        """A dead letter is written whatever its event held: NUL and lone surrogates (which
        a failed event may carry, and UTF-8 cannot encode) become U+FFFD."""
        return scrub(value)


def dead_letter_key(
    stage: str, workspace_id: UUID | None, channel_id: UUID | None, payload: Any
) -> str:
    """``stage:sha256`` of the failed record's identity: equal for the same record."""
    body = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    )
    digest = hashlib.sha256(f"{stage}\x00{workspace_id}\x00{channel_id}\x00".encode())
    digest.update(body.encode("utf-8", "replace"))
    return f"{stage}:{digest.hexdigest()}"


class DocumentIngest(Contract):
    """A document waiting to be extracted, chunked and embedded (``documents.ingest``).

    The bytes stay in the database: a document can be larger than a record.
    """

    workspace_id: UUID
    knowledge_base_id: UUID
    document_id: UUID
