"""Item keys as both the gateway and the normalize stage compute them.

The two must agree exactly: the gateway's Redis fast path and the stream's
dedupe table speak of the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents_pipeline.providers.base import Provider, WebhookItem


@dataclass(frozen=True)
class KeyedItem:
    """A provider item and the key idempotency uses for it (unique within a workspace)."""

    key: str
    item: WebhookItem


def keyed_items(
    provider: Provider,
    body: dict[str, Any],
    *,
    channel_id: str,
    client_key: str | None = None,
    message_id: str | None = None,
) -> list[KeyedItem]:
    """The webhook's items with their idempotency keys.

    Provider keys are scoped by channel (``<channel_id>/<key>``): two numbers of one
    workspace messaging each other see the same message id on both channels. A
    client-given idempotency key replaces them: one item is keyed ``ik:<key>`` and
    several ``ik:<key>#<n>``; the client takes responsibility for naming the delivery.
    The items themselves are the provider's, untouched.
    """
    items = provider.split(body, message_id=message_id)
    if client_key is None:
        return [KeyedItem(f"{channel_id}/{it.key}", it) for it in items]
    if len(items) == 1:
        return [KeyedItem(f"ik:{client_key}", items[0])]
    return [KeyedItem(f"ik:{client_key}#{n}", it) for n, it in enumerate(items)]
