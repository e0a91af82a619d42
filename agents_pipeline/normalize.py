"""normalize: raw webhook records → first-seen items persisted → canonical events.

The source of truth of webhook idempotency. For a batch of ``webhooks.raw``
records it splits each body into provider items, drops items the dedupe table
has seen, writes one ``webhook_events`` row per remaining item (unique per
workspace + item key, so a lost table or a flushed Redis cannot create a second
row) and returns the canonical events to forward. A row whose events were
never forwarded (the worker died in between) is forwarded again on replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers import get_provider
from agents_pipeline.providers.base import NormalizedEvent
from agents_pipeline.providers.items import KeyedItem, keyed_items
from storage import webhook_events
from streams import storable
from streams.contracts import DeadLetter, InboundMessage, RawHeaders

log = logging.getLogger(__name__)

STAGE = "normalize"


@dataclass(frozen=True)
class RawRecord:
    """One ``webhooks.raw`` record as the consumer got it."""

    headers: Any  # Kafka headers: list of (name, bytes) pairs or a mapping
    value: bytes
    partition: int = 0  # where it was read: the dedupe table's keys go to the same one

    @cached_property
    def raw_headers(self) -> RawHeaders | None:
        """The headers, or None when they cannot be read (the record is dead-lettered)."""
        try:
            return RawHeaders.from_kafka(self.headers)
        except (ValidationError, ValueError):
            return None

    # What a dead letter of this record names (``streams.agents.stage``).
    @property
    def trace_id(self) -> str | None:
        """The gateway's trace id."""
        return self.raw_headers.trace_id if self.raw_headers else None

    @property
    def workspace_id(self) -> UUID | None:
        """The workspace the gateway accepted the record for."""
        return self.raw_headers.workspace_id if self.raw_headers else None

    @property
    def channel_id(self) -> UUID | None:
        """The channel it came in on."""
        return self.raw_headers.channel_id if self.raw_headers else None


@dataclass
class Pending:
    """An item to persist and forward."""

    dedupe_key: str
    headers: RawHeaders
    keyed: KeyedItem
    events: list[NormalizedEvent]
    dead: DeadLetter | None = None
    row_id: UUID | None = None


@dataclass
class BatchResult:
    """What the agent sends on and records after one batch."""

    forward: list[Pending] = field(default_factory=list)
    duplicates: int = 0
    # Per input record, in order: the dedupe keys it carried (for the dedupe table), and
    # the dead letter of a record that could not be read at all.
    keys_by_record: list[list[str]] = field(default_factory=list)
    dead_by_record: list[DeadLetter | None] = field(default_factory=list)


def _body_of(headers: RawHeaders, value: bytes) -> tuple[dict[str, Any], str | None]:
    # The gateway's own loader: a body it would refuse (NUL, a lone surrogate, NaN, too
    # deep) is refused here too, for records that did not come through it.
    body = storable.loads(value)
    if not isinstance(body, dict):
        raise UnsupportedPayload("webhook body is not a JSON object", code="bad_shape")
    if headers.envelope == "inbox":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise UnsupportedPayload("inbox envelope without a payload object", code="bad_shape")
        return payload, body.get("idempotency_key")
    return body, None


def split_record(record: RawRecord, headers: RawHeaders) -> list[KeyedItem]:
    """Decode a record's body into keyed items (raises on what cannot be read)."""
    body, client_key = _body_of(headers, record.value)
    items = keyed_items(
        get_provider(headers.provider),
        body,
        channel_id=str(headers.channel_id),
        client_key=client_key,
        message_id=headers.message_id,
    )
    return items


def _dead(reason: str, *, code: str | None, headers: RawHeaders | None, payload: Any) -> DeadLetter:
    return DeadLetter(
        trace_id=headers.trace_id if headers else "unknown",
        stage=STAGE,
        reason=reason,
        error_code=code,
        workspace_id=headers.workspace_id if headers else None,
        channel_id=headers.channel_id if headers else None,
        payload=payload,
    )


def plan_batch(records: Iterable[RawRecord], seen: Callable[[str], bool]) -> BatchResult:
    """Split and normalize a batch; items the dedupe table has seen are counted and dropped."""
    result = BatchResult()
    in_batch: set[str] = set()
    for record in records:
        keys: list[str] = []
        result.keys_by_record.append(keys)
        result.dead_by_record.append(None)
        headers: RawHeaders | None = None
        try:
            headers = RawHeaders.from_kafka(record.headers)
            items = split_record(record, headers)
        except (UnsupportedPayload, ValidationError, ValueError, UnicodeDecodeError) as exc:
            code = getattr(exc, "code", None) or type(exc).__name__
            result.dead_by_record[-1] = _dead(
                f"unreadable webhook: {exc}",
                code=code,
                headers=headers,
                payload=record.value.decode("utf-8", "replace")[:65536],
            )
            continue
        if not items:
            result.dead_by_record[-1] = _dead(
                "webhook carries no item we know",
                code="no_items",
                headers=headers,
                payload=record.value.decode("utf-8", "replace")[:65536],
            )
            continue
        provider = get_provider(headers.provider)
        for keyed in items:
            key = f"{headers.workspace_id}:{keyed.key}"
            keys.append(key)
            if key in in_batch or seen(key):
                result.duplicates += 1
                continue
            in_batch.add(key)
            pending = Pending(key, headers, keyed, [])
            try:
                pending.events = provider.normalize(keyed.item, headers=headers)
            except UnsupportedPayload as exc:
                pending.dead = _dead(
                    str(exc), code=exc.code, headers=headers, payload=keyed.item.payload
                )
            result.forward.append(pending)
    return result


_SECRET_HEADERS = ("authorization", "x-hub-signature-256", "apikey", "token")


def _row(p: Pending) -> dict[str, Any]:
    h = p.headers
    raw_headers = {
        k: v for k, v in h.model_dump(mode="json").items() if k.lower() not in _SECRET_HEADERS
    }
    return {
        "workspace_id": h.workspace_id,
        "channel_id": h.channel_id,
        "provider": h.provider.value,
        "idempotency_key": p.keyed.key,
        "raw_payload": p.keyed.item.payload,
        "raw_headers": raw_headers,
        "trace_id": h.trace_id,
        "received_at": h.received_at,
    }


async def persist_batch(pool: AsyncConnectionPool, result: BatchResult) -> None:
    """Write the batch's rows in one statement; drop items another delivery already forwarded."""
    if not result.forward:
        return
    async with pool.connection() as conn:
        ids = await webhook_events.insert_events(conn, [_row(p) for p in result.forward])
    kept: list[Pending] = []
    for p in result.forward:
        row_id, forwarded = ids[f"{p.headers.workspace_id}:{p.keyed.key}"]
        if forwarded:
            result.duplicates += 1
            continue
        p.row_id = row_id
        for event in p.events:
            if isinstance(event, InboundMessage):
                event.webhook_event_id = row_id
        kept.append(p)
    result.forward = kept


async def mark_batch_forwarded(pool: AsyncConnectionPool, result: BatchResult) -> None:
    """After the events are on their topics: record what each row became."""
    normalized = {
        p.row_id: (
            [e.model_dump(mode="json") for e in p.events]
            if not p.dead
            else {"deadletter": p.dead.reason}
        )
        for p in result.forward
        if p.row_id is not None
    }
    async with pool.connection() as conn:
        await webhook_events.mark_forwarded(conn, normalized)
