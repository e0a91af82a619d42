"""Topic contracts: the gateway's fast header encoding reads back as RawHeaders."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from streams.contracts import ProviderName, RawHeaders


def test_encoded_headers_round_trip() -> None:
    ch, ws = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    encoded = RawHeaders.encode(
        provider="whatsapp_cloud",
        channel_id=ch,
        workspace_id=ws,
        received_at=now,
        trace_id="ab" * 16,
        idempotency_key="sha256:00",
        message_id=None,
    )
    h = RawHeaders.from_kafka(encoded)
    assert h == RawHeaders(
        provider=ProviderName.WHATSAPP_CLOUD,
        channel_id=ch,
        workspace_id=ws,
        received_at=now,
        trace_id="ab" * 16,
        idempotency_key="sha256:00",
    )
    model = RawHeaders(
        provider=ProviderName.SANDBOX,
        channel_id=ch,
        workspace_id=ws,
        received_at=now,
        trace_id="t",
        idempotency_key="k",
        envelope="inbox",
        message_id="m1",
    )
    fast = RawHeaders.encode(
        provider="sandbox",
        channel_id=ch,
        workspace_id=ws,
        received_at=now,
        trace_id="t",
        idempotency_key="k",
        envelope="inbox",
        message_id="m1",
    )
    assert RawHeaders.from_kafka(fast) == RawHeaders.from_kafka(model.to_kafka()) == model


def test_no_contract_has_a_field_for_a_secret() -> None:
    """No topic value can carry a credential by design (channel configs stay in PostgreSQL)."""
    from pydantic import BaseModel, SecretStr

    from agents_pipeline.providers.base import field_name
    from streams import contracts

    suspicious = ("secret", "token", "apikey", "password", "config", "credential", "authorization")
    models = [
        m
        for m in vars(contracts).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m is not BaseModel
    ]
    assert len(models) > 10
    for model in models:
        for name, info in model.model_fields.items():
            assert not any(word in field_name(name) for word in suspicious), (model, name)
            assert info.annotation is not SecretStr, (model, name)
