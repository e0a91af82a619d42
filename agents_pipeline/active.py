"""Is a message's channel (and workspace) still active? Asked before generating an answer.

The gateway refuses webhooks of a deactivated channel or workspace, but a message that
entered the stream before the deactivation still flows. generate asks here first, so
that no LLM call is made for it (and send refuses it too: ``agents_pipeline.send``).
The answer comes from the worker's ``Lookups`` cache (a few seconds of TTL: a
deactivation takes effect within that time); each refusal is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from agents_pipeline.lookups import Lookups
from storage.db import Conn
from streams.contracts import AuditEvent, ResolvedMessage


async def inactive_reasons(
    conn: Conn, lookups: Lookups, msgs: Sequence[ResolvedMessage]
) -> list[str | None]:
    """Per message: ``workspace_inactive``, ``channel_inactive`` or None (active)."""
    out: list[str | None] = []
    for m in msgs:  # Lookups caches each workspace and channel: one read per TTL
        workspace = await lookups.workspace(conn, m.workspace_id)
        if workspace is None or not workspace["is_active"]:
            out.append("workspace_inactive")
            continue
        channel = await lookups.channel(conn, m.workspace_id, m.channel_id)
        out.append(None if channel is not None and channel["is_active"] else "channel_inactive")
    return out


def not_answered(msg: ResolvedMessage, reason: str, at: datetime) -> AuditEvent:
    """The audit row of a message left unanswered because of a deactivation."""
    return AuditEvent(
        trace_id=msg.trace_id,
        event_key=f"message.not_answered:{msg.message_id}",
        workspace_id=msg.workspace_id,
        actor="system:generate",
        action="message.not_answered",
        object_type="message",
        object_id=str(msg.message_id),
        details={"reason": reason, "channel_id": str(msg.channel_id)},
        occurred_at=at,
    )
