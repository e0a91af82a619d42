"""The one interface every provider implements: split, normalize and send.

A provider turns a webhook body into *items* (one message, one status, one
event; each with its own idempotency key, so that the same message arriving in
two different POSTs is processed once), turns each item into canonical events,
and delivers outbound text through the provider's HTTP API.

``split`` is pure and cheap: the gateway calls it on every request to compute
the Redis fast-path keys, and the normalize stage calls it again on the raw
body it reads from ``webhooks.raw``; both must agree.

``redact`` removes the credentials a provider puts in its bodies before the
gateway produces them (``redaction.py``): no topic carries a secret, and both
``split`` calls see the same redacted body.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import BaseModel

from streams.contracts import InboundMessage, ProviderName, RawHeaders, StatusUpdate

ItemKind = Literal["message", "status", "event"]


@dataclass(frozen=True)
class WebhookItem:
    """One provider item of a webhook, self-contained in the provider's own shape."""

    key: str
    kind: ItemKind
    payload: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class SendResult:
    """What a provider answered to a successful send."""

    provider_message_id: str
    raw: dict[str, Any] = field(default_factory=dict, hash=False)


NormalizedEvent = InboundMessage | StatusUpdate


class Provider(ABC):
    """Base provider: one subclass per provider, stateless, shared by every channel."""

    name: ClassVar[ProviderName]

    @abstractmethod
    def split(self, body: dict[str, Any], *, message_id: str | None = None) -> list[WebhookItem]:
        """Split a webhook body into items with their idempotency keys.

        Raises ``UnsupportedPayload`` when the body is not a webhook of this
        provider at all. ``message_id`` is an id the gateway assigned when the
        body carried none (sandbox).
        """

    def redact(self, body: dict[str, Any]) -> bool:
        """Delete, in place, every field of a webhook body that carries a credential; True
        when one was. The default: this provider's bodies carry none.

        ``split`` and ``normalize`` must not need what is removed.
        """
        del body
        return False

    @abstractmethod
    def normalize(self, item: WebhookItem, *, headers: RawHeaders) -> list[NormalizedEvent]:
        """Turn one item into canonical events (zero for events we ignore).

        Raises ``UnsupportedPayload`` with the reason for a shape it cannot read.
        """

    @abstractmethod
    async def send_text(
        self,
        session: aiohttp.ClientSession,
        config: BaseModel,
        *,
        to: str,
        text: str,
        timeout: float = 10.0,
    ) -> SendResult:
        """Deliver a text message once (no retry here; the send stage retries).

        Raises ``ProviderError`` with the provider's code, ``retriable`` and
        ``retry_after`` set from the answer.
        """


def field_name(name: str) -> str:
    """One spelling of a field name for matching: ``API_Key``, ``api-key`` → ``apikey``."""
    return name.lower().replace("_", "").replace("-", "")


def strip_fields(body: Any, names: Collection[str]) -> bool:
    """Delete, in place and at any depth, every object field whose ``field_name`` is in
    ``names``; True when one was. Iterative: a deeply nested body cannot exhaust the stack."""
    removed = False
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in [k for k in node if field_name(k) in names]:
                del node[key]
                removed = True
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
    return removed
