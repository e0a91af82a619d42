"""reply: a generated answer becomes the one outbound bot message and a send request.

The outbound row is unique per inbound message (``messages_one_bot_reply``): its id
is the send's idempotency key, so a replayed answer never makes a second message.
"""

from __future__ import annotations

from collections.abc import Sequence

from storage import bulk, messages
from storage.db import Conn
from streams.contracts import GeneratedReply, SendRequest


async def prepare_reply(conn: Conn, gen: GeneratedReply) -> SendRequest | None:
    """Store the bot reply (once) and the request to send it; None when already sent."""
    row, _ = await messages.insert_bot_reply(
        conn,
        workspace_id=gen.workspace_id,
        channel_id=gen.channel_id,
        conversation_id=gen.conversation_id,
        in_reply_to=gen.message_id,
        text=gen.reply_text,
        trace_id=gen.trace_id,
    )
    return _request(gen, row)


async def prepare_replies(conn: Conn, gens: Sequence[GeneratedReply]) -> list[SendRequest | None]:
    """``prepare_reply`` for a batch in one statement: per answer, in order, its request."""
    stored = await bulk.insert_bot_replies(
        conn,
        [
            {
                "workspace_id": g.workspace_id,
                "channel_id": g.channel_id,
                "conversation_id": g.conversation_id,
                "in_reply_to": g.message_id,
                "text": g.reply_text,
                "trace_id": g.trace_id,
            }
            for g in gens
        ],
    )
    return [_request(g, stored[g.message_id][0]) for g in gens]


def _request(gen: GeneratedReply, row: dict) -> SendRequest | None:
    if row["status"] not in ("pending", "sending"):
        return None
    return SendRequest(
        trace_id=gen.trace_id,
        workspace_id=gen.workspace_id,
        channel_id=gen.channel_id,
        provider=gen.provider,
        conversation_id=gen.conversation_id,
        contact_external_id=gen.contact_external_id,
        contact_phone=gen.contact_phone,
        outbound_id=row["id"],
        in_reply_to=gen.message_id,
        author="bot",
        text=row["text"],
        received_at=gen.received_at,
    )
