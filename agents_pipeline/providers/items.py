"""Item keys as both the gateway and the normalize stage compute them.

The two must agree exactly: the gateway's Redis fast path and the stream's
dedupe table speak of the same keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents_pipeline.providers.base import Provider, WebhookItem


def keyed_items(
    provider: Provider,
    body: dict[str, Any],
    *,
    channel_id: str,
    client_key: str | None = None,
    message_id: str | None = None,
) -> list[WebhookItem]:
    """The webhook's items with the keys idempotency uses (unique within a workspace).

    Provider keys are scoped by channel (``<channel_id>/<key>``): two numbers of one
    workspace messaging each other see the same message id on both channels. A
    client-given idempotency key replaces them: one item is keyed ``ik:<key>`` and
    several ``ik:<key>#<n>``; the client takes responsibility for naming the delivery.
    """
    items = provider.split(body, message_id=message_id)
    if client_key is None:
        return [dataclasses.replace(it, key=f"{channel_id}/{it.key}") for it in items]
    if len(items) == 1:
        return [dataclasses.replace(items[0], key=f"ik:{client_key}")]
    return [dataclasses.replace(it, key=f"ik:{client_key}#{n}") for n, it in enumerate(items)]
