"""Contacts: one per person per channel, whichever of their identifiers arrives."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from storage.db import Conn

Row = dict[str, Any]
_COLS = "id, workspace_id, channel_id, external_id, alt_ids, phone, name, created_at, updated_at"


async def upsert_contact(
    conn: Conn,
    *,
    workspace_id: UUID,
    channel_id: UUID,
    external_id: str,
    alt_ids: list[str],
    phone: str | None,
    name: str | None,
) -> Row:
    """Find the contact by any of its identifiers or create it; merge what is new.

    A provider may name one person by two ids (a phone-based id and a ``@lid`` or a
    username id): both stay on the one contact, so that the same person is one contact
    and one conversation whichever identifier arrives. A display name or phone given now
    replaces the stored one; an absent one keeps it.
    """
    ids = [external_id, *[a for a in alt_ids if a != external_id]]
    cur = await conn.execute(
        f"SELECT {_COLS} FROM contacts WHERE channel_id = %s AND workspace_id = %s"
        " AND (external_id = ANY(%s) OR alt_ids && %s) ORDER BY created_at LIMIT 1 FOR UPDATE",
        (channel_id, workspace_id, ids, ids),
    )
    row = await cur.fetchone()
    if row is not None:
        known = [row["external_id"], *row["alt_ids"]]
        merged = row["alt_ids"] + [i for i in ids if i not in known]
        if (
            merged != row["alt_ids"]
            or (name and name != row["name"])
            or (phone and phone != row["phone"])
        ):
            cur = await conn.execute(
                f"UPDATE contacts SET alt_ids = %s, name = coalesce(%s, name),"
                f" phone = coalesce(%s, phone) WHERE id = %s RETURNING {_COLS}",
                (merged, name, phone, row["id"]),
            )
            row = await cur.fetchone()
        return row  # type: ignore[return-value]
    cur = await conn.execute(
        "INSERT INTO contacts (workspace_id, channel_id, external_id, alt_ids, phone, name)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (channel_id, external_id) DO UPDATE SET"
        " name = coalesce(EXCLUDED.name, contacts.name),"
        f" phone = coalesce(EXCLUDED.phone, contacts.phone) RETURNING {_COLS}",
        (workspace_id, channel_id, external_id, ids[1:], phone, name),
    )
    return await cur.fetchone()  # type: ignore[return-value]
