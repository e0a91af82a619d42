"""WhatsApp Cloud API (Meta) provider: webhooks in (``inbound``), text out (``outbound``)."""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel

from agents_pipeline.providers.base import NormalizedEvent, Provider, SendResult, WebhookItem
from agents_pipeline.providers.configs import WhatsAppCloudConfig
from agents_pipeline.providers.whatsapp_cloud import inbound
from streams.contracts import ProviderName, RawHeaders


class WhatsAppCloudProvider(Provider):
    """Meta's WhatsApp Cloud API behind the one provider interface the pipeline knows."""

    name: ClassVar[ProviderName] = ProviderName.WHATSAPP_CLOUD

    def split(self, body: dict[str, Any], *, message_id: str | None = None) -> list[WebhookItem]:
        """Split a Cloud POST into keyed items (see ``inbound.split``)."""
        return inbound.split(body, message_id=message_id)

    def normalize(self, item: WebhookItem, *, headers: RawHeaders) -> list[NormalizedEvent]:
        """Turn one Cloud item into canonical events (see ``inbound.normalize``)."""
        return inbound.normalize(item, headers=headers)

    async def send_text(
        self,
        session: aiohttp.ClientSession,
        config: BaseModel,
        *,
        to: str,
        text: str,
        timeout: float = 10.0,
    ) -> SendResult:
        """Deliver a text through the Graph API (delegates to ``outbound.send_text``)."""
        if not isinstance(config, WhatsAppCloudConfig):
            raise TypeError(f"WhatsApp Cloud needs a WhatsAppCloudConfig, not {type(config)!r}")
        # Imported on first send, so that parsing webhooks never depends on the HTTP side.
        from agents_pipeline.providers.whatsapp_cloud.outbound import send_text

        return await send_text(session, config, to=to, text=text, timeout=timeout)


__all__ = ["WhatsAppCloudProvider"]
