"""Sandbox provider: a test channel whose webhooks are plain JSON and whose sends go nowhere.

A webhook body is ``{"from": str, "name"?: str, "text": str, "message_id"?: str}``; without
``message_id`` the gateway assigns one and passes it to ``split``.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import uuid4

import aiohttp
from pydantic import BaseModel, ValidationError

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers.base import NormalizedEvent, Provider, SendResult, WebhookItem
from streams.contracts import ContactRef, InboundMessage, ProviderName, RawHeaders

KEY_PREFIX = "sbx:msg:"


def _required_str(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise UnsupportedPayload(f"Sandbox webhook: no {field}", code="missing_field")
    return value


class SandboxProvider(Provider):
    """Lets a workspace try its agent end to end without a WhatsApp number."""

    name: ClassVar[ProviderName] = ProviderName.SANDBOX

    def split(self, body: dict[str, Any], *, message_id: str | None = None) -> list[WebhookItem]:
        """One item per body, keyed on its own message_id, else the gateway-assigned one."""
        if not isinstance(body, dict):
            raise UnsupportedPayload("Sandbox webhook: body is not an object", code="bad_shape")
        sender = _required_str(body, "from")
        text = _required_str(body, "text")
        own_id = body.get("message_id")
        if own_id is not None and not isinstance(own_id, str):
            raise UnsupportedPayload(
                "Sandbox webhook: message_id is not a string", code="bad_shape"
            )
        resolved = own_id or message_id
        if not resolved:
            raise UnsupportedPayload("Sandbox webhook: no message id", code="missing_field")
        payload: dict[str, Any] = {"from": sender, "text": text, "message_id": resolved}
        if isinstance(body.get("name"), str) and body["name"]:
            payload["name"] = body["name"]
        return [WebhookItem(key=f"{KEY_PREFIX}{resolved}", kind="message", payload=payload)]

    def normalize(self, item: WebhookItem, *, headers: RawHeaders) -> list[NormalizedEvent]:
        """One text InboundMessage; the contact is named by ``from`` as given."""
        if not item.key.startswith(KEY_PREFIX) or len(item.key) == len(KEY_PREFIX):
            raise UnsupportedPayload(f"Sandbox item key {item.key!r}", code="bad_key")
        body = item.payload
        if not isinstance(body, dict):
            raise UnsupportedPayload("Sandbox item payload is not an object", code="bad_shape")
        name = body.get("name")
        try:
            message = InboundMessage(
                trace_id=headers.trace_id,
                event_key=item.key,
                workspace_id=headers.workspace_id,
                channel_id=headers.channel_id,
                provider=ProviderName.SANDBOX,
                provider_message_id=item.key.removeprefix(KEY_PREFIX),
                contact=ContactRef(
                    external_id=_required_str(body, "from"),
                    name=name if isinstance(name, str) and name else None,
                ),
                type="text",
                text=_required_str(body, "text"),
                sent_at=headers.received_at,
                received_at=headers.received_at,
            )
        except ValidationError as exc:
            raise UnsupportedPayload(f"Sandbox webhook: {exc}", code="invalid_value") from exc
        return [message]

    async def send_text(
        self,
        session: aiohttp.ClientSession,
        config: BaseModel,
        *,
        to: str,
        text: str,
        timeout: float = 10.0,
    ) -> SendResult:
        """Accept the text without any HTTP call: the stored outbound row is the delivery."""
        return SendResult(provider_message_id=f"sandbox-{uuid4()}")


__all__ = ["KEY_PREFIX", "SandboxProvider"]
