"""Rotating the Fernet key: add a new first key, ``omnichat rotate-secrets``, drop the old key.

Runs on a database of its own (the session's other channels stay sealed with the session
key), with real gateways reading the channels' credentials at each step: Meta's handshake
needs the decrypted verify token, an Evolution webhook the decrypted webhook token.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import psycopg
import pytest
from pydantic import SecretStr

from omnichat.settings import Settings
from storage.migrate import migrate
from storage.secrets import SecretBox
from tests.conftest import Gateway, Stack, Tenant, make_tenant, start_gateway
from tests.integration.helpers import create_channel


@asynccontextmanager
async def gateway_with(settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway app of its own (own caches) with these settings."""
    runner, url, app = await start_gateway(settings)
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(url, http, app, settings)
    finally:
        await runner.cleanup()


async def rotate(url: str, **keys: str) -> tuple[int, str, str]:
    """``omnichat rotate-secrets --batch-size 1`` in a child process; (code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHAT_")}
    env.update({f"OMNICHAT_{k.upper()}": v for k, v in keys.items()}, OMNICHAT_DATABASE_URL=url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnichat.cli",
        "rotate-secrets",
        "--batch-size",
        "1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def sealed(url: str) -> list[bytes]:
    """Every channel's sealed secrets."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT secrets FROM channels WHERE secrets IS NOT NULL")
        return [bytes(r[0]) for r in await cur.fetchall()]


async def handshake(gw: Gateway, channel_id: str, verify_token: str) -> int:
    """Meta's verification GET: 200 only if the gateway decrypted the verify token."""
    status, body = await gw.call(
        "GET",
        f"/api/v1/webhooks/whatsapp/{channel_id}?hub.mode=subscribe"
        f"&hub.verify_token={verify_token}&hub.challenge=c42",
    )
    assert status != 200 or body == "c42"
    return status


async def evolution_hook(gw: Gateway, channel_id: str, token: str) -> int:
    """A webhook to the (deactivated) Evolution channel: 403 once the token matched, 401 not.

    The channel is inactive so that nothing is produced: the check stops at the 403.
    """
    status, _ = await gw.call(
        "POST",
        f"/api/v1/webhooks/evolution/{channel_id}?token={token}",
        json={"event": "connection.update", "instance": "i", "data": {}},
    )
    return status


@pytest.fixture
async def rotation_db(stack: Stack) -> str:
    """A fresh, migrated database."""
    name = f"rot_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(stack.postgres.url, autocommit=True) as c:
        await c.execute(f'CREATE DATABASE "{name}"')
    url = stack.postgres.url.replace("/postgres?", f"/{name}?")
    await migrate(url)
    return url


async def test_rotate_secrets(settings: Settings, rotation_db: str) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    base = settings.model_copy(update={"database_url": rotation_db, "secret_keys": None})

    # 1. Everything sealed with the old key.
    async with gateway_with(base.model_copy(update={"secret_key": SecretStr(old)})) as gw:
        tenant: Tenant = await make_tenant(gw, "Rotation")
        cloud = await create_channel(
            gw,
            tenant,
            "whatsapp_cloud",
            {
                "phone_number_id": "1",
                "access_token": "tok",
                "app_secret": "app",
                "verify_token": "vt-1",
            },
        )
        evo = await create_channel(
            gw,
            tenant,
            "evolution",
            {
                "base_url": "http://127.0.0.1:9",
                "instance": "i",
                "api_key": "k",
                "webhook_token": "w",
            },
        )
        status, _ = await gw.call(
            "PATCH",
            f"/api/v1/channels/{evo['id']}",
            key=tenant.key,
            workspace=tenant.id,
            json={"is_active": False},
        )
        assert status == 200
        assert await handshake(gw, cloud["id"], "vt-1") == 200
    assert all(SecretBox(old).is_current(t) for t in await sealed(rotation_db))

    # 2. A new first key (SECRET_KEYS) with the old one still there (SECRET_KEY): the old
    #    secrets read, new ones are sealed with the new key.
    both = base.model_copy(update={"secret_key": SecretStr(old), "secret_keys": SecretStr(new)})
    assert both.fernet_keys == [new, old]
    async with gateway_with(both) as gw:
        assert await handshake(gw, cloud["id"], "vt-1") == 200
        assert await evolution_hook(gw, evo["id"], "w") == 403
        assert await evolution_hook(gw, evo["id"], "nope") == 401
        status, _ = await gw.call(
            "PATCH",
            f"/api/v1/channels/{cloud['id']}",
            key=tenant.key,
            workspace=tenant.id,
            json={"config": {"verify_token": "vt-2"}},
        )
        assert status == 200
    tokens = await sealed(rotation_db)
    assert sorted(SecretBox(new).is_current(t) for t in tokens) == [False, True]

    # 3. rotate-secrets re-encrypts what the old key sealed; a second run finds nothing to do.
    code, out, err = await rotate(rotation_db, secret_keys=f"{new},{old}")
    assert code == 0, err
    assert "channels: 1 re-encrypted, 1 already on the first key" in out
    assert "0 unreadable" in out
    assert all(SecretBox(new).is_current(t) for t in await sealed(rotation_db))
    code, out, err = await rotate(rotation_db, secret_keys=f"{new},{old}")
    assert code == 0 and "channels: 0 re-encrypted, 2 already on the first key" in out, out

    # 4. The old key can go: the new one alone reads everything; the old one alone nothing.
    only_new = base.model_copy(update={"secret_key": None, "secret_keys": SecretStr(new)})
    async with gateway_with(only_new) as gw:
        assert await handshake(gw, cloud["id"], "vt-2") == 200
        assert await evolution_hook(gw, evo["id"], "w") == 403
    code, out, err = await rotate(rotation_db, secret_key=old)
    assert code == 1 and "2 unreadable" in out, (out, err)
