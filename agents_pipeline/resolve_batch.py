"""resolve for a whole stream batch: the decisions of ``resolve``, a few statements per batch.

``resolve`` costs about six round trips per message (contact, conversation, message,
touch, and the transaction). Here each of those is one multi-row statement for the
batch (``storage.bulk``), and the per-message decisions (replay, human mode, nothing
to answer, no agent) are taken in Python in the batch's order, which is each
conversation's order. Conversations with a message from the business's own number
(echo or human takeover: rare, and they change the conversation's mode mid-batch)
go through ``resolve`` one message at a time, in order, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from agents_pipeline.lookups import READ_THROUGH, Lookups
from agents_pipeline.resolve import ResolveOutcome, bind_agent, human_holds, resolve
from storage import bulk
from storage.db import Conn
from streams.contracts import InboundMessage

_PAYLOAD_FIELDS = {"media", "location", "contacts", "reply", "reaction", "context_message_id"}


async def resolve_batch(
    conn: Conn,
    msgs: Sequence[InboundMessage],
    *,
    takeover_seconds: int,
    now: datetime,
    lookups: Lookups = READ_THROUGH,
) -> list[ResolveOutcome]:
    """Resolve messages inside the caller's transaction; one outcome per message, in order."""
    outcomes: list[ResolveOutcome | None] = [None] * len(msgs)
    # A conversation (partition key) with a from_me message goes one message at a time.
    one_by_one = {m.key for m in msgs if m.from_me}
    batch: list[int] = []
    channels: dict[UUID, dict[str, Any]] = {}
    for i, m in enumerate(msgs):
        if m.key in one_by_one:
            continue
        channel = await lookups.channel(conn, m.workspace_id, m.channel_id)
        if channel is None:
            outcomes[i] = ResolveOutcome("unknown_channel")
            continue
        channels[m.channel_id] = channel
        batch.append(i)
    if batch:
        done = await _resolve_inbound(
            conn, [msgs[i] for i in batch], channels, now=now, lookups=lookups
        )
        for i, outcome in zip(batch, done, strict=True):
            outcomes[i] = outcome
    for i, m in enumerate(msgs):
        if m.key in one_by_one:
            outcomes[i] = await resolve(
                conn, m, takeover_seconds=takeover_seconds, now=now, lookups=lookups
            )
    return [o for o in outcomes if o is not None]


async def _contacts(conn: Conn, msgs: Sequence[InboundMessage]) -> list[dict[str, Any]]:
    """Each message's contact: found by any identifier, merged, or created (as
    ``contacts.upsert_contact`` would, one message after another)."""
    by_channel: dict[tuple[UUID, UUID], list[int]] = {}
    for i, m in enumerate(msgs):
        by_channel.setdefault((m.workspace_id, m.channel_id), []).append(i)
    result: list[dict[str, Any]] = [{}] * len(msgs)
    for (ws, ch), idx in by_channel.items():
        ids = sorted(
            {x for i in idx for x in (msgs[i].contact.external_id, *msgs[i].contact.alt_ids)}
        )
        known = await bulk.find_contacts(conn, workspace_id=ws, channel_id=ch, ids=ids)
        rows: list[dict[str, Any]] = [dict(r) for r in known]  # oldest first, new ones after
        changed: dict[int, dict[str, Any]] = {}
        new: list[dict[str, Any]] = []
        for i in idx:
            c = msgs[i].contact
            mine = [c.external_id, *[a for a in c.alt_ids if a != c.external_id]]
            row = next(
                (r for r in rows if r["external_id"] in mine or set(r["alt_ids"]) & set(mine)),
                None,
            )
            if row is None:
                row = {
                    "external_id": c.external_id,
                    "alt_ids": mine[1:],
                    "phone": c.phone,
                    "name": c.name,
                }
                rows.append(row)
                new.append(row)
            else:
                have = [row["external_id"], *row["alt_ids"]]
                merged = row["alt_ids"] + [x for x in mine if x not in have]
                if (
                    merged != row["alt_ids"]
                    or (c.name and c.name != row["name"])
                    or (c.phone and c.phone != row["phone"])
                ):
                    row["alt_ids"] = merged
                    row["name"] = c.name or row["name"]
                    row["phone"] = c.phone or row["phone"]
                    if "id" in row:
                        changed[id(row)] = row
            result[i] = row
        await bulk.update_contacts(conn, workspace_id=ws, rows=list(changed.values()))
        created = await bulk.insert_contacts(conn, workspace_id=ws, channel_id=ch, rows=new)
        by_ext = {r["external_id"]: r for r in created}
        for row in new:
            row.update(by_ext[row["external_id"]])
    return result


async def _resolve_inbound(
    conn: Conn,
    msgs: Sequence[InboundMessage],
    channels: dict[UUID, dict[str, Any]],
    *,
    now: datetime,
    lookups: Lookups,
) -> list[ResolveOutcome]:
    """Messages from contacts (not from our own number), in order."""
    contacts = await _contacts(conn, msgs)
    keys = list(
        dict.fromkeys(
            (m.workspace_id, m.channel_id, c["id"]) for m, c in zip(msgs, contacts, strict=True)
        )
    )
    convs = await bulk.open_conversations(conn, keys)
    stored = await bulk.insert_inbound(
        conn,
        [
            {
                "workspace_id": m.workspace_id,
                "channel_id": m.channel_id,
                "conversation_id": convs[c["id"]]["id"],
                "type": m.type,
                "text": m.text,
                "payload": m.model_dump(mode="json", include=_PAYLOAD_FIELDS),
                "provider_message_id": m.provider_message_id,
                "trace_id": m.trace_id,
                "sent_at": m.sent_at,
            }
            for m, c in zip(msgs, contacts, strict=True)
        ],
    )
    latest: dict[UUID, tuple[UUID, datetime]] = {}
    for m, c in zip(msgs, contacts, strict=True):
        conv = convs[c["id"]]
        seen = latest.get(conv["id"])
        if seen is None or m.sent_at > seen[1]:
            latest[conv["id"]] = (m.workspace_id, m.sent_at)
    await bulk.touch_conversations(conn, [(ws, cid, at, at) for cid, (ws, at) in latest.items()])
    replied = await bulk.bot_replied(
        conn,
        [
            (m.workspace_id, row["id"])
            for m, (row, created) in zip(msgs, stored, strict=True)
            if not created
        ],
    )

    out: list[ResolveOutcome] = []
    counted: set[UUID] = set()  # a conversation opened here is counted on its first message
    for m, c, (row, created) in zip(msgs, contacts, stored, strict=True):
        conv = convs[c["id"]]
        opened = bool(conv.get("opened")) and conv["id"] not in counted
        counted.add(conv["id"])
        outcome = ResolveOutcome(
            "answer",
            message_id=row["id"],
            conversation_id=conv["id"],
            created=created,
            conversation_opened=opened,
        )
        out.append(outcome)
        if not created and row["id"] in replied:
            outcome.reason = "already_answered"
            continue
        if await human_holds(conn, m.workspace_id, conv, now):
            outcome.reason = "human_mode"
            continue
        await bind_agent(
            conn,
            m,
            outcome,
            channel=channels[m.channel_id],
            contact=c,
            conv=conv,
            row=row,
            lookups=lookups,
        )
    return out
