"""resolve: a canonical inbound message → contact, conversation, stored message, agent.

Stops (returns no ResolvedMessage) when the message must not be answered: it is
our own echo, a person answering from the business's phone (which also hands the
conversation to a human for a while), a conversation in human mode, a channel
with no published agent, or a message with nothing to answer (a reaction).
A replayed message is resolved again unless it already has its reply, so that a
worker dying between storing and forwarding never loses an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from agents_pipeline.lookups import READ_THROUGH, Lookups
from storage import contacts, conversations, messages
from storage.db import Conn
from streams.contracts import AuditEvent, InboundMessage, ResolvedMessage

Reason = Literal[
    "answer",
    "already_answered",
    "own_echo",
    "human_takeover",
    "human_mode",
    "no_agent",
    "nothing_to_answer",
    "unknown_channel",
]


@dataclass
class ResolveOutcome:
    """What resolve decided for one message."""

    reason: Reason
    resolved: ResolvedMessage | None = None
    message_id: UUID | None = None
    conversation_id: UUID | None = None
    created: bool = False  # the inbound message was stored now (usage counts it once)
    conversation_opened: bool = False  # this message opened its conversation (stats)
    audit: list[AuditEvent] = field(default_factory=list)


def _audit(msg: InboundMessage, action: str, object_id: UUID, details: dict) -> AuditEvent:
    return AuditEvent(
        trace_id=msg.trace_id,
        event_key=f"{action}:{msg.event_key}",
        workspace_id=msg.workspace_id,
        actor="system:resolve",
        action=action,
        object_type="conversation",
        object_id=str(object_id),
        details=details,
        occurred_at=msg.received_at,
    )


async def resolve(
    conn: Conn,
    msg: InboundMessage,
    *,
    takeover_seconds: int,
    now: datetime,
    lookups: Lookups = READ_THROUGH,
) -> ResolveOutcome:
    """Resolve one message inside the caller's transaction."""
    channel = await lookups.channel(conn, msg.workspace_id, msg.channel_id)
    if channel is None:
        return ResolveOutcome("unknown_channel")
    c = msg.contact
    contact = await contacts.upsert_contact(
        conn,
        workspace_id=msg.workspace_id,
        channel_id=msg.channel_id,
        external_id=c.external_id,
        alt_ids=c.alt_ids,
        phone=c.phone,
        name=None if msg.from_me else c.name,  # on our own messages the name is ours
    )
    conv = await conversations.open_conversation(
        conn, workspace_id=msg.workspace_id, channel_id=msg.channel_id, contact_id=contact["id"]
    )
    if msg.from_me:
        outcome = await _from_business_number(conn, msg, conv, takeover_seconds, now)
        outcome.conversation_opened = bool(conv.get("opened"))
        return outcome

    row, created = await messages.insert_inbound(
        conn,
        workspace_id=msg.workspace_id,
        channel_id=msg.channel_id,
        conversation_id=conv["id"],
        type_=msg.type,
        text=msg.text,
        payload=msg.model_dump(
            mode="json",
            include={"media", "location", "contacts", "reply", "reaction", "context_message_id"},
        ),
        provider_message_id=msg.provider_message_id,
        trace_id=msg.trace_id,
        sent_at=msg.sent_at,
    )
    outcome = ResolveOutcome(
        "answer",
        message_id=row["id"],
        conversation_id=conv["id"],
        created=created,
        conversation_opened=bool(conv.get("opened")),
    )
    await conversations.touch(
        conn,
        workspace_id=msg.workspace_id,
        conversation_id=conv["id"],
        at=msg.sent_at,
        inbound=True,
    )
    if not created and await messages.has_bot_reply(
        conn, workspace_id=msg.workspace_id, in_reply_to=row["id"]
    ):
        outcome.reason = "already_answered"
        return outcome
    if await human_holds(conn, msg.workspace_id, conv, now):
        outcome.reason = "human_mode"
        return outcome
    await bind_agent(
        conn, msg, outcome, channel=channel, contact=contact, conv=conv, row=row, lookups=lookups
    )
    return outcome


async def human_holds(conn: Conn, workspace_id: UUID, conv: dict, now: datetime) -> bool:
    """Whether a human still has the conversation (the bot stays quiet); a takeover whose
    time ran out hands it back to the bot here, on the first message after it."""
    if conv["mode"] != "human":
        return False
    until = conv["human_until"]
    if until is None or until > now:
        return True
    await conversations.set_mode(
        conn, workspace_id=workspace_id, conversation_id=conv["id"], mode="bot", human_until=None
    )
    conv["mode"] = "bot"
    return False


async def bind_agent(
    conn: Conn,
    msg: InboundMessage,
    outcome: ResolveOutcome,
    *,
    channel: dict,
    contact: dict,
    conv: dict,
    row: dict,
    lookups: Lookups,
) -> None:
    """The last decision for a stored message the bot may answer (shared with the batch):
    nothing to answer, no agent on the channel, or ``outcome.resolved`` for retrieve."""
    if msg.type == "reaction" or not (msg.text and msg.text.strip()):
        outcome.reason = "nothing_to_answer"
        return
    if channel["agent_id"] is None:
        outcome.reason = "no_agent"
        return
    version = await lookups.published_version(conn, msg.workspace_id, channel["agent_id"])
    if version is None:
        outcome.reason = "no_agent"
        return
    outcome.resolved = ResolvedMessage(
        trace_id=msg.trace_id,
        workspace_id=msg.workspace_id,
        channel_id=msg.channel_id,
        provider=msg.provider,
        contact_id=contact["id"],
        contact_external_id=contact["external_id"],
        contact_phone=contact["phone"],
        conversation_id=conv["id"],
        message_id=row["id"],
        text=msg.text,
        type=msg.type,
        agent_id=channel["agent_id"],
        agent_version_id=version["id"],
        knowledge_base_ids=list(version["knowledge_base_ids"]),
        received_at=msg.received_at,
    )


async def _from_business_number(
    conn: Conn, msg: InboundMessage, conv: dict, takeover_seconds: int, now: datetime
) -> ResolveOutcome:
    """A message sent from the business's own number: our echo, or a human answering."""
    ours = await messages.get_by_provider_id(
        conn, channel_id=msg.channel_id, provider_message_id=msg.provider_message_id
    )
    if ours is not None or await messages.recent_bot_text(
        conn, conversation_id=conv["id"], text=msg.text
    ):
        return ResolveOutcome("own_echo", conversation_id=conv["id"])
    row, created = await messages.insert_human_outbound(
        conn,
        workspace_id=msg.workspace_id,
        channel_id=msg.channel_id,
        conversation_id=conv["id"],
        text=msg.text,
        trace_id=msg.trace_id,
        provider_message_id=msg.provider_message_id,
        type_=msg.type,
        status="sent",
        sent_at=msg.sent_at,
    )
    outcome = ResolveOutcome("human_takeover", message_id=row["id"], conversation_id=conv["id"])
    if created:
        until = now + timedelta(seconds=takeover_seconds)
        await conversations.set_mode(
            conn,
            workspace_id=msg.workspace_id,
            conversation_id=conv["id"],
            mode="human",
            human_until=until,
        )
        await conversations.touch(
            conn,
            workspace_id=msg.workspace_id,
            conversation_id=conv["id"],
            at=msg.sent_at,
            inbound=False,
        )
        outcome.audit.append(
            _audit(
                msg,
                "conversation.human_takeover",
                conv["id"],
                {"until": until.isoformat(), "message_id": str(row["id"])},
            )
        )
    return outcome
