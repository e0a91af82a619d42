"""reply: a generated answer becomes the one outbound bot message and a send request.

The outbound row is unique per inbound message (``messages_one_bot_reply``): its id
is the send's idempotency key, so a replayed answer never makes a second message.
"""

from __future__ import annotations

from storage import messages
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
