"""Sandbox provider: plain JSON webhooks in, sends that go nowhere."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from agents_pipeline.errors import UnsupportedPayload
from agents_pipeline.providers import get_provider
from agents_pipeline.providers.base import WebhookItem
from agents_pipeline.providers.configs import SandboxConfig
from streams.contracts import InboundMessage, ProviderName
from tests.unit.agents_pipeline.fixtures import (
    CHANNEL_ID,
    RECEIVED_AT,
    TRACE_ID,
    WORKSPACE_ID,
    assert_only_unsupported,
    make_headers,
    run,
)

SANDBOX = get_provider(ProviderName.SANDBOX)
PT_TEXT = "Olá! Vocês entregam em São João del-Rei? Preciso até sábado 🚚 — obrigada"


def test_split_keys_on_the_body_message_id() -> None:
    [item] = SANDBOX.split({"from": "ana", "text": "oi", "message_id": "m-1"})
    assert item.key == "sbx:msg:m-1"
    assert item.kind == "message"
    assert item.payload == {"from": "ana", "text": "oi", "message_id": "m-1"}


def test_split_falls_back_to_the_gateway_message_id() -> None:
    [item] = SANDBOX.split({"from": "ana", "text": "oi"}, message_id="gw-7")
    assert item.key == "sbx:msg:gw-7"
    assert item.payload["message_id"] == "gw-7"


def test_body_message_id_wins_over_the_gateway_one() -> None:
    [item] = SANDBOX.split({"from": "ana", "text": "oi", "message_id": "m-1"}, message_id="gw-7")
    assert item.key == "sbx:msg:m-1"


def test_same_message_id_same_key() -> None:
    first = SANDBOX.split({"from": "ana", "text": "oi", "message_id": "m-1"})
    again = SANDBOX.split({"from": "ana", "text": "outra vez", "message_id": "m-1"})
    assert first[0].key == again[0].key


def test_normalize_gives_one_text_message() -> None:
    body = {"from": "+5511988887777", "name": "Ana Conceição", "text": PT_TEXT, "message_id": "m-1"}
    [event] = run(SANDBOX, body)
    assert isinstance(event, InboundMessage)
    assert event.event_key == "sbx:msg:m-1"
    assert event.provider is ProviderName.SANDBOX
    assert event.provider_message_id == "m-1"
    assert (event.trace_id, event.workspace_id, event.channel_id) == (
        TRACE_ID,
        WORKSPACE_ID,
        CHANNEL_ID,
    )
    assert event.received_at == event.sent_at == RECEIVED_AT
    assert event.type == "text"
    assert event.text == PT_TEXT
    assert event.from_me is False
    assert event.contact.external_id == "+5511988887777"
    assert event.contact.name == "Ana Conceição"
    assert event.contact.phone is None


def test_name_is_optional() -> None:
    [event] = run(SANDBOX, {"from": "ana", "text": "oi"}, message_id="gw-1")
    assert isinstance(event, InboundMessage)
    assert event.contact.name is None
    assert event.provider_message_id == "gw-1"


@pytest.mark.parametrize(
    ("body", "message_id"),
    [
        (None, "m"),
        ([], "m"),
        ("oi", "m"),
        ({}, "m"),
        ({"text": "oi"}, "m"),
        ({"from": "ana"}, "m"),
        ({"from": "", "text": "oi"}, "m"),
        ({"from": "ana", "text": ""}, "m"),
        ({"from": 5511, "text": "oi"}, "m"),
        ({"from": "ana", "text": ["oi"]}, "m"),
        ({"from": "ana", "text": "oi", "message_id": 7}, "m"),
        ({"from": "ana", "text": "oi"}, None),
        ({"from": "ana", "text": "oi", "message_id": ""}, None),
    ],
)
def test_bad_bodies_are_unsupported(body: Any, message_id: str | None) -> None:
    with pytest.raises(UnsupportedPayload):
        SANDBOX.split(body, message_id=message_id)


@pytest.mark.parametrize(
    "item",
    [
        WebhookItem(key="sbx:msg:m", kind="message", payload={"text": "oi"}),
        WebhookItem(key="sbx:msg:m", kind="message", payload={"from": "ana"}),
        WebhookItem(key="sbx:msg:", kind="message", payload={"from": "ana", "text": "oi"}),
        WebhookItem(key="wa:msg:m", kind="message", payload={"from": "ana", "text": "oi"}),
        WebhookItem(key="sbx:msg:m", kind="message", payload=["from", "text"]),  # type: ignore[arg-type]
    ],
)
def test_forged_items_are_unsupported(item: WebhookItem) -> None:
    with pytest.raises(UnsupportedPayload):
        SANDBOX.normalize(item, headers=make_headers(ProviderName.SANDBOX))


def test_fuzz_only_unsupported() -> None:
    assert_only_unsupported(
        SANDBOX, {"from": "ana", "name": "Ana", "text": PT_TEXT, "message_id": "m-1"}
    )


async def test_send_text_makes_no_http_call_and_returns_a_fresh_id() -> None:
    async with aiohttp.ClientSession() as session:
        first = await SANDBOX.send_text(session, SandboxConfig(), to="ana", text=PT_TEXT)
        second = await SANDBOX.send_text(session, SandboxConfig(), to="ana", text="oi")
    assert first.provider_message_id.startswith("sandbox-")
    assert len(first.provider_message_id) == len("sandbox-") + 36
    assert first.provider_message_id != second.provider_message_id
    assert first.raw == {}
