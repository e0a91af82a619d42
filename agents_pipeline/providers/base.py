"""The one interface every provider implements: split, normalize and send.

A provider turns a webhook body into *items* (one message, one status, one
event; each with its own idempotency key, so that the same message arriving in
two different POSTs is processed once), turns each item into canonical events,
and delivers outbound text through the provider's HTTP API.

``split`` is pure and cheap: the gateway calls it on every request to compute
the Redis fast-path keys, and the normalize stage calls it again on the raw
body it reads from ``webhooks.raw``; both must agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
