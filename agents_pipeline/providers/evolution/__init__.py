"""Evolution API (v2) provider: webhooks in (``inbound``), text out (``outbound``)."""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
from pydantic import BaseModel

from agents_pipeline.providers.base import NormalizedEvent, Provider, SendResult, WebhookItem
from agents_pipeline.providers.configs import EvolutionConfig
from agents_pipeline.providers.evolution import inbound
from streams.contracts import ProviderName, RawHeaders


class EvolutionProvider(Provider):
    """The Evolution API gateway (WhatsApp Web) behind the one provider interface."""

    name: ClassVar[ProviderName] = ProviderName.EVOLUTION

    def split(self, body: dict[str, Any], *, message_id: str | None = None) -> list[WebhookItem]:
        """Split an Evolution body into keyed items (see ``inbound.split``)."""
        return inbound.split(body, message_id=message_id)

    def redact(self, body: dict[str, Any]) -> bool:
        """Strip the instance's ``apikey`` and other credentials (see ``inbound.redact``)."""
        return inbound.redact(body)

    def normalize(self, item: WebhookItem, *, headers: RawHeaders) -> list[NormalizedEvent]:
        """Turn one Evolution item into canonical events (see ``inbound.normalize``)."""
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
        """Deliver a text through the instance's API (delegates to ``outbound.send_text``)."""
        if not isinstance(config, EvolutionConfig):
            raise TypeError(f"Evolution needs an EvolutionConfig, not {type(config)!r}")
        # Imported on first send, so that parsing webhooks never depends on the HTTP side.
        from agents_pipeline.providers.evolution.outbound import send_text

        return await send_text(session, config, to=to, text=text, timeout=timeout)


__all__ = ["EvolutionProvider"]
