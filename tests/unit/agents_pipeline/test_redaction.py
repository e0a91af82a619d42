"""Credentials out of webhook bodies: what is removed, and that nothing else changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents_pipeline.providers import get_provider
from agents_pipeline.providers.base import strip_fields
from agents_pipeline.providers.items import keyed_items
from agents_pipeline.providers.redaction import redact_webhook
from streams.contracts import ProviderName
from tests.conftest import fixture_path
from tests.unit.agents_pipeline.fixtures import make_headers

CHANNEL = "22222222-2222-4222-8222-222222222222"
APIKEY = "0CE98F9E-36BE-401A-99FA-EA4E300942C4"  # evolution_upsert_text.json's
MESSAGE_SECRET = "Q3ngYL6Mi8gzb1naAYiHy/Z36XGRXYzfZfJXBbSlzxk="


def raw_fixture(name: str) -> bytes:
    """A shared provider payload's bytes."""
    return fixture_path(name).read_bytes()


def events(provider: str, body: dict[str, Any]) -> list[Any]:
    """Every canonical event of a body, through split and normalize."""
    p = get_provider(provider)
    out: list[Any] = []
    for keyed in keyed_items(p, body, channel_id=CHANNEL):
        h = make_headers(ProviderName(provider))
        out += [e.model_dump() for e in p.normalize(keyed.item, headers=h)]
    return out


@pytest.mark.parametrize(
    "name",
    [
        "evolution_upsert_text.json",
        "evolution_connection_update.json",
        "evolution_messages_update.json",
        "evolution_upsert_image_truncated_base64.json",
    ],
)
def test_evolution_bodies_lose_credentials_and_nothing_else(name: str) -> None:
    raw = raw_fixture(name)
    original = json.loads(raw)
    body = json.loads(raw)
    produced = redact_webhook("evolution", raw, body)
    assert json.loads(produced) == body
    assert APIKEY.encode() not in produced and MESSAGE_SECRET.encode() not in produced
    assert "apikey" not in body
    p = get_provider("evolution")
    before = [k.key for k in keyed_items(p, original, channel_id=CHANNEL)]
    after = [k.key for k in keyed_items(p, body, channel_id=CHANNEL)]
    assert before == after, "the gateway's and the stream's keys do not move"
    assert events("evolution", original) == events("evolution", body)
    if "apikey" not in original and MESSAGE_SECRET.encode() not in raw:
        assert produced is raw, "nothing to strip: the bytes go on untouched"


def test_cloud_bodies_go_on_as_signed() -> None:
    raw = raw_fixture("cloud_text.json")
    body = json.loads(raw)
    assert redact_webhook("whatsapp_cloud", raw, body) is raw
    assert body == json.loads(raw)


def test_inbox_envelope_is_redacted_inside_its_payload() -> None:
    payload = json.loads(raw_fixture("evolution_upsert_text.json"))
    envelope = {"channel_id": CHANNEL, "idempotency_key": "k-1", "payload": payload}
    raw = json.dumps(envelope).encode()
    produced = redact_webhook("evolution", raw, envelope, envelope="inbox")
    assert APIKEY.encode() not in produced
    decoded = json.loads(produced)
    assert decoded["idempotency_key"] == "k-1" and decoded["channel_id"] == CHANNEL
    assert "apikey" not in decoded["payload"] and decoded["payload"]["event"] == "messages.upsert"


def test_every_credential_spelling_and_depth() -> None:
    body = {
        "event": "qrcode.updated",
        "apikey": "a",
        "API_KEY": "b",
        "data": {
            "qrcode": {"pairingCode": "p", "code": "c", "base64": "data:..."},
            "instance": {"Token": "t", "access-token": "u", "name": "loja"},
            "list": [{"password": "x", "keep": 1}, [{"Authorization": "Bearer y"}]],
        },
    }
    assert get_provider("evolution").redact(body)
    assert body == {
        "event": "qrcode.updated",
        "data": {"instance": {"name": "loja"}, "list": [{"keep": 1}, [{}]]},
    }
    assert not get_provider("evolution").redact(body), "nothing left: False"


def test_strip_fields_on_a_very_deep_body() -> None:
    body: dict[str, Any] = {"apikey": "top"}
    node = body
    for _ in range(10_000):  # far deeper than the interpreter's recursion limit
        node["n"] = {}
        node = node["n"]
    node["token"] = "deep"
    assert strip_fields(body, {"apikey", "token"})
    assert "apikey" not in body and "token" not in node


def test_non_object_bodies_are_left_alone() -> None:
    for body in ([], "x", None, 3):
        assert redact_webhook("evolution", b"raw", body) == b"raw"
    assert redact_webhook("evolution", b"raw", {"payload": []}, envelope="inbox") == b"raw"
