"""No credential on any topic: Evolution's apikey and the like are gone before webhooks.raw.

An Evolution webhook carries the instance's API key in its body. The gateway strips it (and
the other credential fields) before producing, so neither the raw tap nor any topic holds
it; the stripped body is still split, deduplicated and normalized as before.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from streams.topics import PIPELINE_TOPICS
from tests.conftest import Gateway, Tenant, fixture_path, wait_until
from tests.integration.helpers import create_channel, read_topic
from tests.integration.test_taps import open_tap

EVO = {
    "base_url": "http://127.0.0.1:9",
    "instance": "tigo1",
    "api_key": "evo-send-key",
    "webhook_token": "evo-hook-token",
}


def upsert(message_id: str, apikey: str, message_secret: str) -> dict[str, Any]:
    """The upsert fixture with its own message id, API key and message secret."""
    body = json.loads(fixture_path("evolution_upsert_text.json").read_text())
    body["data"]["key"]["id"] = message_id
    body["data"]["message"]["messageContextInfo"]["messageSecret"] = message_secret
    body["apikey"] = apikey
    return body


async def stored(pool: AsyncConnectionPool, channel_id: str, message_id: str) -> bool:
    """Whether the pipeline stored the inbound message (normalize read the stripped body)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT 1 FROM messages WHERE channel_id = %s AND provider_message_id = %s",
            (channel_id, message_id),
        )
        return await cur.fetchone() is not None


async def test_no_credential_reaches_a_topic(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, worker: Any
) -> None:
    ch = await create_channel(gateway, tenant, "evolution", EVO)
    tag = uuid.uuid4().hex
    secrets = {
        "apikey": f"APIKEY-{tag}",
        "inbox_apikey": f"INBOXKEY-{tag}",
        "message_secret": f"MSGSECRET-{tag}",
        "pairing": f"PAIRING-{tag}",
        "qr": f"QRCODE-{tag}",
    }
    direct_id, inbox_id = f"3EB0{tag[:12].upper()}", f"3EB1{tag[:12].upper()}"
    direct = upsert(direct_id, secrets["apikey"], secrets["message_secret"])
    qrcode = {
        "event": "qrcode.updated",
        "instance": "tigo1",
        "data": {"qrcode": {"pairingCode": secrets["pairing"], "code": secrets["qr"]}},
        "apikey": secrets["apikey"],
    }
    inbox = {
        "channel_id": ch["id"],
        "payload": upsert(inbox_id, secrets["inbox_apikey"], secrets["message_secret"]),
    }
    hook = f"/api/v1/webhooks/evolution/{ch['id']}?token={EVO['webhook_token']}"

    async with open_tap(gateway, tenant, "webhooks.raw") as tap:
        for body in (direct, qrcode):
            status, answer = await gateway.call("POST", hook, json=body)
            assert status == 200 and answer["idempotent"] is False, answer
        status, answer = await gateway.call(
            "POST", "/api/v1/webhooks/inbox/", key=tenant.key, workspace=tenant.id, json=inbox
        )
        assert status == 200 and answer["idempotent"] is False, answer
        seen = [
            await tap.until(lambda d: direct_id in d["value"]),
            await tap.until(lambda d: "qrcode.updated" in d["value"]),
            await tap.until(lambda d: inbox_id in d["value"]),
        ]
    # The raw tap shows the bodies, minus every credential.
    assert json.loads(seen[0]["value"])["data"]["key"]["id"] == direct_id
    assert "apikey" not in json.loads(seen[0]["value"])
    assert "apikey" not in json.loads(seen[2]["value"])["payload"]
    for event in tap.seen:
        for secret in secrets.values():
            assert secret not in event.data

    # Repeats are recognised: the fast path's keys come from the stripped body too.
    status, answer = await gateway.call("POST", hook, json=direct)
    assert status == 200 and answer["idempotent"] is True, answer

    # The normalizer reads the stripped bodies: both messages are stored.
    await wait_until(lambda: stored(pool, ch["id"], direct_id), timeout=90)
    await wait_until(lambda: stored(pool, ch["id"], inbox_id), timeout=30)

    # And no topic holds any of the values, in a record's key, value or headers.
    broker = gateway.settings.broker_url or ""
    for topic in PIPELINE_TOPICS:
        for record in await read_topic(broker, topic):
            data = (record.key or b"") + (record.value or b"")
            data += b"".join(v for _, v in record.headers or ())
            for secret in secrets.values():
                assert secret.encode() not in data, (topic, secret)
