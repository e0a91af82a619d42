"""status: delivery statuses move our outbound messages up, never down."""

from __future__ import annotations

from storage import messages
from storage.db import Conn
from streams.contracts import StatusUpdate


async def apply_status(conn: Conn, update: StatusUpdate) -> bool:
    """Apply one status; False when the message is unknown or already ranks as high.

    Statuses arrive out of order (``read`` before ``delivered``) or not at all; the
    message keeps the highest it reached. A ``failed`` status keeps its error code.
    """
    return await messages.apply_status(
        conn,
        channel_id=update.channel_id,
        workspace_id=update.workspace_id,
        provider_message_id=update.provider_message_id,
        status=update.status,
        error_code=update.error_code,
        error_message=update.error_title,
    )
