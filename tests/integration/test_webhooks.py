"""The webhook gateway: verified, idempotent, durable ingest, against the real services."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from omnichat.embedded import EmbeddedBroker, free_port
from omnichat.settings import Settings
from streams.contracts import RawHeaders
from tests.conftest import Gateway, Stack, Tenant, fixture_path, start_gateway, wait_until
from tests.integration.helpers import count_rows, create_channel, read_topic, sign

APP_SECRET = "test_app_secret_0123456789abcdef"  # the fixture's signature vectors use it
CLOUD = {
    "phone_number_id": "106540352242922",
    "access_token": "EAAG-cloud-token-SECRET1",
    "app_secret": APP_SECRET,
    "verify_token": "meatyhamhock",
}
EVO = {
    "base_url": "http://127.0.0.1:9",
    "instance": "tigo1",
    "api_key": "evo-apikey-SECRET2",
    "webhook_token": "evo-hook-token-SECRET3",
}
SECRETS = [
    "EAAG-cloud-token-SECRET1",
    APP_SECRET,
    "meatyhamhock",
    "evo-apikey-SECRET2",
    "evo-hook-token-SECRET3",
]

CLOUD_WEBHOOKS = [
    "cloud_audio_voice.json",
    "cloud_document.json",
    "cloud_image.json",
    "cloud_image_with_url.json",
    "cloud_interactive_button_reply.json",
    "cloud_location.json",
    "cloud_multi.json",
    "cloud_reaction.json",
    "cloud_status_delivered.json",
    "cloud_status_failed.json",
    "cloud_status_read.json",
    "cloud_status_sent.json",
    "cloud_text.json",
]
EVOLUTION_WEBHOOKS = [
    "evolution_connection_update.json",
    "evolution_messages_update.json",
    "evolution_upsert_image_truncated_base64.json",
    "evolution_upsert_text.json",
]


def _load(name: str) -> dict[str, Any]:
    data = json.loads(fixture_path(name).read_text())
    return {k: v for k, v in data.items() if not k.startswith("_note")}


async def _post_cloud(
    gw: Gateway,
    channel_id: str,
    body: bytes,
    secret: str = APP_SECRET,
    signature: str | None = None,
) -> tuple[int, Any]:
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature or sign(body, secret),
    }
    return await gw.call(
        "POST", f"/api/v1/webhooks/whatsapp/{channel_id}", data=body, headers=headers
    )


def _cloud_text(wamid: str, text: str = "Oi, tudo bem?") -> bytes:
    body = _load("cloud_text.json")
    msg = body["entry"][0]["changes"][0]["value"]["messages"][0]
    msg["id"] = wamid
    msg["text"]["body"] = text
    return json.dumps(body).encode()


async def _raw_for_channel(settings: Settings, channel_id: str) -> list[Any]:
    records = await read_topic(settings.broker_url or "", "webhooks.raw")
    return [r for r in records if r.key == channel_id.encode()]


@pytest.mark.parametrize("name", CLOUD_WEBHOOKS)
async def test_every_cloud_fixture_is_accepted_and_durable(
    gateway: Gateway, tenant: Tenant, name: str
) -> None:
    ch = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    raw = fixture_path(name).read_bytes()
    status, body = await _post_cloud(gateway, ch["id"], raw)
    assert status == 200, body
    assert body["ok"] is True and body["idempotent"] is False
    records = await _raw_for_channel(gateway.settings, ch["id"])
    assert len(records) == 1
    assert records[0].value == raw  # untouched bytes
    headers = RawHeaders.from_kafka(records[0].headers)
    assert str(headers.workspace_id) == tenant.id and headers.provider == "whatsapp_cloud"
    assert headers.trace_id == body["trace_id"]


@pytest.mark.parametrize("name", EVOLUTION_WEBHOOKS)
async def test_every_evolution_fixture_is_accepted(
    gateway: Gateway, tenant: Tenant, name: str
) -> None:
    ch = await create_channel(gateway, tenant, "evolution", EVO)
    raw = fixture_path(name).read_bytes()
    status, body = await gateway.call(
        "POST",
        f"/api/v1/webhooks/evolution/{ch['id']}?token={EVO['webhook_token']}",
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    assert status == 200, body
    status, body = await gateway.call(
        "POST",
        f"/api/v1/webhooks/evolution/{ch['id']}",
        data=raw,
        headers={"Authorization": f"Bearer {EVO['webhook_token']}"},
    )
    assert status == 200 and body["ok"]
    for bad in ({"Authorization": "Bearer nope"}, {}):
        status, body = await gateway.call(
            "POST", f"/api/v1/webhooks/evolution/{ch['id']}", data=raw, headers=bad
        )
        assert status == 401 and body["error"]["code"] == "invalid_token"


async def test_signatures(gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool) -> None:
    vectors = json.loads(fixture_path("cloud_signature_vectors_computed.json").read_text())
    ch = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    other = await create_channel(
        gateway, tenant, "whatsapp_cloud", {**CLOUD, "app_secret": "another-channels-secret"}
    )
    body_a = vectors["A_raw_body_as_received_ascii_escaped"].encode()
    status, _ = await _post_cloud(
        gateway, ch["id"], body_a, signature=vectors["A_x_hub_signature_256"]
    )
    assert status == 200
    # B's signature is over the re-serialised body: it does not match the bytes received.
    status, body = await _post_cloud(
        gateway, ch["id"], body_a, signature=vectors["B_signature_of_reserialised_body"]
    )
    assert status == 401 and body["error"]["code"] == "invalid_signature"
    status, _ = await gateway.call("POST", f"/api/v1/webhooks/whatsapp/{ch['id']}", data=body_a)
    assert status == 401
    # Valid for another channel: refused.
    status, _ = await _post_cloud(gateway, ch["id"], body_a, secret="another-channels-secret")
    assert status == 401
    status, _ = await _post_cloud(gateway, other["id"], body_a, secret="another-channels-secret")
    assert status == 200
    assert len(await _raw_for_channel(gateway.settings, ch["id"])) == 1
    assert (
        await count_rows(
            pool,
            "SELECT count(*) FROM audit_log WHERE object_id = %s AND action = %s",
            ch["id"],
            "webhook.auth_failed",
        )
        == 1
    )  # rate-limited: one row per channel per window


async def test_handshake(gateway: Gateway, tenant: Tenant) -> None:
    ch = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    q = _load("cloud_verify_get.json")["request"]["query"]
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    status, text = await gateway.call("GET", f"/api/v1/webhooks/whatsapp/{ch['id']}?{qs}")
    assert status == 200 and text == "1158201444"
    status, body = await gateway.call(
        "GET",
        f"/api/v1/webhooks/whatsapp/{ch['id']}?hub.mode=subscribe&hub.challenge=1"
        "&hub.verify_token=wrong",
    )
    assert status == 403 and body["error"]["code"] == "verification_failed"
    status, _ = await gateway.call("GET", f"/api/v1/webhooks/whatsapp/{uuid.uuid4()}?{qs}")
    assert status == 404


async def test_bad_requests(gateway: Gateway, tenant: Tenant) -> None:
    ch = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    status, body = await _post_cloud(gateway, ch["id"], b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    big = b'{"object": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    import io

    status, body = await gateway.call(
        "POST",
        f"/api/v1/webhooks/whatsapp/{ch['id']}",
        data=io.BytesIO(big),
        headers={"X-Hub-Signature-256": sign(big, APP_SECRET)},
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, _ = await _post_cloud(gateway, str(uuid.uuid4()), _cloud_text("wamid.x"))
    assert status == 404
    status, _ = await _post_cloud(gateway, "not-a-uuid", _cloud_text("wamid.x"))
    assert status == 404
    await gateway.call(
        "PATCH",
        f"/api/v1/channels/{ch['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"is_active": False},
    )
    status, body = await _post_cloud(gateway, ch["id"], _cloud_text("wamid.y"))
    assert status == 403 and body["error"]["code"] == "channel_inactive"
    assert await _raw_for_channel(gateway.settings, ch["id"]) == []


async def test_duplicates_one_row_one_event(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any, stack: Stack
) -> None:
    ch = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    wamid = f"wamid.{uuid.uuid4().hex}"
    first = _cloud_text(wamid, "Quanto custa o pão de queijo?")
    status, body = await _post_cloud(gateway, ch["id"], first)
    assert status == 200 and body["idempotent"] is False
    await asyncio.sleep(0.05)
    status, body = await _post_cloud(gateway, ch["id"], first)  # same request again
    assert status == 200 and body["idempotent"] is True
    # The same message id inside a different POST (another text around it): same item key.
    second = _cloud_text(wamid, "Quanto custa o pão de queijo? (retry)")
    status, body = await _post_cloud(gateway, ch["id"], second)
    assert status == 200 and body["idempotent"] is True
    # Redis flushed: the fast path forgets, the stream does not.
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(stack.redis.url)
    await r.flushall()
    await r.aclose()
    status, body = await _post_cloud(gateway, ch["id"], first)
    assert status == 200 and body["idempotent"] is False
    # A fourth delivery with one new message beside the known one: only the new one is new.
    multi = json.loads(first)
    msgs = multi["entry"][0]["changes"][0]["value"]["messages"]
    msgs.append({**msgs[0], "id": f"wamid.{uuid.uuid4().hex}", "text": {"body": "Segunda"}})
    status, body = await _post_cloud(gateway, ch["id"], json.dumps(multi).encode())
    assert status == 200 and body["idempotent"] is False and body["items"] == 2

    assert len(await _raw_for_channel(gateway.settings, ch["id"])) == 3  # repeats not produced

    async def rows() -> int:
        n = await count_rows(
            pool, "SELECT count(*) FROM webhook_events WHERE channel_id = %s", ch["id"]
        )
        forwarded = await count_rows(
            pool,
            "SELECT count(*) FROM webhook_events WHERE channel_id = %s AND normalized IS NOT NULL",
            ch["id"],
        )
        return n == 2 and forwarded == 2

    await wait_until(rows, timeout=60)
    await asyncio.sleep(1.0)
    assert (
        await count_rows(
            pool, "SELECT count(*) FROM webhook_events WHERE channel_id = %s", ch["id"]
        )
        == 2
    )
    normalized = [
        r
        for r in await read_topic(gateway.settings.broker_url or "", "messages.normalized")
        if r.key.startswith(ch["id"].encode())
    ]
    ids = [json.loads(r.value)["provider_message_id"] for r in normalized]
    assert sorted(ids) == sorted({wamid, msgs[1]["id"]})  # one downstream event each
    event = json.loads(normalized[ids.index(wamid)].value)
    assert event["text"] == "Quanto custa o pão de queijo?"
    assert event["contact"]["external_id"] == "16505551234"
    assert event["contact"]["name"] == "Sheena Nelson"


async def test_multi_item_post_is_one_key_per_item(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any
) -> None:
    ch = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    body = _load("cloud_text.json")
    value = body["entry"][0]["changes"][0]["value"]
    base = value["messages"][0]
    value["messages"] = [{**base, "id": f"wamid.m{i}.{uuid.uuid4().hex}"} for i in range(3)]
    value["statuses"] = [
        {
            "id": f"wamid.s{i}.{uuid.uuid4().hex}",
            "status": "delivered",
            "timestamp": "1749416390",
            "recipient_id": "16505551234",
        }
        for i in range(2)
    ]
    status, answer = await _post_cloud(gateway, ch["id"], json.dumps(body).encode())
    assert status == 200 and answer["items"] == 5

    async def five() -> bool:
        return (
            await count_rows(
                pool,
                "SELECT count(*) FROM webhook_events WHERE channel_id = %s"
                " AND normalized IS NOT NULL",
                ch["id"],
            )
            == 5
        )

    await wait_until(five, timeout=60)


async def test_unreadable_provider_payload_is_dead_lettered(
    gateway: Gateway, tenant: Tenant, worker: Any
) -> None:
    ch = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    raw = json.dumps({"object": "instagram", "entry": "???"}).encode()
    status, _ = await _post_cloud(gateway, ch["id"], raw)
    assert status == 200  # accepted: Meta cannot fix it and would retry for days

    async def dead() -> list[Any]:
        recs = await read_topic(gateway.settings.broker_url or "", "deadletter")
        return [r for r in recs if ch["id"] in r.value.decode()]

    letters = await wait_until(dead, timeout=60)
    assert json.loads(letters[0].value)["stage"] == "normalize"


async def test_inbox_and_sandbox(gateway: Gateway, tenant: Tenant) -> None:
    sandbox = await create_channel(gateway, tenant, "sandbox", {})
    payload = {"from": "5511988887777", "name": "Maria", "text": "Olá! Vocês abrem domingo?"}
    status, a = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{sandbox['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={**payload, "message_id": "sbx-1"},
    )
    assert status == 200 and a == {
        "ok": True,
        "idempotent": False,
        "trace_id": a["trace_id"],
        "items": 1,
        "message_id": "sbx-1",
    }
    await asyncio.sleep(0.05)
    status, b = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{sandbox['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={**payload, "message_id": "sbx-1"},
    )
    assert status == 200 and b["idempotent"] is True
    status, c = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{sandbox['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json=payload,
    )
    assert status == 200 and c["message_id"].startswith("sbx-")
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{sandbox['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"text": "x"},
    )
    assert status == 422
    # The generic inbox, with the integrator's idempotency key.
    inbox = {
        "channel_id": sandbox["id"],
        "idempotency_key": "order-42",
        "payload": {"from": "5511988887777", "text": "Pedido 42"},
    }
    status, d = await gateway.call(
        "POST", "/api/v1/webhooks/inbox/", key=tenant.key, workspace=tenant.id, json=inbox
    )
    assert status == 200 and d["ok"] is True and d["idempotent"] is False
    await asyncio.sleep(0.05)
    status, e = await gateway.call(
        "POST", "/api/v1/webhooks/inbox/", key=tenant.key, workspace=tenant.id, json=inbox
    )
    assert status == 200 and e == {"ok": True, "idempotent": True}
    status, f = await gateway.call(
        "POST",
        "/api/v1/webhooks/inbox/",
        key=tenant.key,
        workspace=tenant.id,
        json={**inbox, "provider": "whatsapp_cloud"},
    )
    assert status == 422 and f["error"]["code"] == "wrong_provider"
    status, _ = await gateway.call("POST", "/api/v1/webhooks/inbox/", json=inbox)
    assert status == 401


async def test_broker_down_503_then_resumes(
    settings: Settings, stack: Stack, tenant: Tenant, gateway: Gateway
) -> None:
    broker = EmbeddedBroker(log_path=stack.tmp / "broker-2.log").start()
    local = settings.model_copy(update={"broker_url": broker.url, "produce_timeout_seconds": 1.0})
    runner, url, _ = await start_gateway(local)
    try:
        gw2 = Gateway(url, gateway.http, _, local)
        ch = await create_channel(gw2, tenant, "whatsapp_cloud", CLOUD)
        body = _cloud_text(f"wamid.{uuid.uuid4().hex}")
        assert (await _post_cloud(gw2, ch["id"], body))[0] == 200
        broker.stop()
        other = _cloud_text(f"wamid.{uuid.uuid4().hex}")
        status, answer = await _post_cloud(gw2, ch["id"], other)
        assert status == 503 and answer["error"]["code"] == "broker_unavailable"
        status, ready = await gw2.call("GET", "/readyz")
        assert status == 503 and ready["broker"] == "unavailable"
        broker.start()  # same port; memory storage: the topics come back empty

        async def accepted() -> bool:
            s, a = await _post_cloud(gw2, ch["id"], other)
            return s == 200 and a["idempotent"] is False  # nothing was recorded as accepted

        await wait_until(accepted, timeout=60, interval=0.5)
        recs = await read_topic(broker.url, "webhooks.raw")
        # The accepted retry is there. The 503'd attempt may be too (the client library went on
        # retrying it once the broker was back): a duplicate the stream's dedupe drops.
        assert other in [r.value for r in recs]
        assert {r.value for r in recs} == {other}
    finally:
        await runner.cleanup()
        broker.stop()


async def test_redis_down_does_not_stop_ingest(
    settings: Settings, tenant: Tenant, gateway: Gateway
) -> None:
    local = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    runner, url, app = await start_gateway(local)
    try:
        gw2 = Gateway(url, gateway.http, app, local)
        ch = await create_channel(gw2, tenant, "whatsapp_cloud", CLOUD)
        for _ in range(2):
            status, answer = await _post_cloud(gw2, ch["id"], _cloud_text("wamid.redis-down"))
            assert status == 200 and answer["idempotent"] is False
        status, ready = await gw2.call("GET", "/readyz")
        assert status == 503 and ready["redis"] == "unavailable"
    finally:
        await runner.cleanup()


async def test_secrets_never_leak(
    gateway: Gateway, tenant: Tenant, worker: Any, stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cloud = await create_channel(gateway, tenant, "whatsapp_cloud", CLOUD)
    evo = await create_channel(gateway, tenant, "evolution", EVO)
    await _post_cloud(gateway, cloud["id"], _cloud_text(f"wamid.{uuid.uuid4().hex}"))
    await gateway.call(
        "POST",
        f"/api/v1/webhooks/evolution/{evo['id']}",
        data=fixture_path("evolution_upsert_text.json").read_bytes(),
        headers={"Authorization": f"Bearer {EVO['webhook_token']}"},
    )
    await _post_cloud(gateway, cloud["id"], b"{}", signature="sha256=00")  # a failure, logged
    answers = [
        await gateway.call("GET", f"/api/v1/channels/{cid}", key=tenant.key, workspace=tenant.id)
        for cid in (cloud["id"], evo["id"])
    ]
    answers.append(
        await gateway.call("GET", "/api/v1/audit/?limit=200", key=tenant.key, workspace=tenant.id)
    )
    await asyncio.sleep(2.0)
    topic_bytes = b""
    for topic in ("webhooks.raw", "messages.normalized", "messages.status", "deadletter"):
        for r in await read_topic(gateway.settings.broker_url or "", topic):
            topic_bytes += r.value + b"".join(v for _, v in r.headers)
    broker_log = await asyncio.to_thread((stack.tmp / "broker.log").read_text, errors="replace")
    logs = caplog.text + worker.log() + broker_log
    for secret in SECRETS:
        assert secret not in str(answers)
        assert secret.encode() not in topic_bytes
        assert secret not in logs
