"""Session fixtures: a real broker, PostgreSQL and Redis, started by the test session itself."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from omnichat.embedded import EmbeddedBroker, EmbeddedPostgres, EmbeddedRedis, free_port
from omnichat.settings import Settings
from storage.secrets import SecretBox

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("OMNICHAT_FIXTURES", REPO.parent / "shared" / "fixtures"))
ADMIN_TOKEN = "test-admin-token"


def fixture_path(name: str) -> Path:
    """A provider payload from ../shared/fixtures/providers."""
    return FIXTURES / "providers" / name


@dataclass
class Stack:
    """The embedded servers of the test session."""

    broker: EmbeddedBroker
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    tmp: Path


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Tansu, PostgreSQL + pgvector and Redis, for the whole session."""
    tmp = Path(tempfile.mkdtemp(prefix="omnichat-tests-"))
    broker = EmbeddedBroker(log_path=tmp / "broker.log").start()
    postgres = EmbeddedPostgres(tmp / "pg").start()
    redis = EmbeddedRedis(tmp / "redis").start()
    try:
        yield Stack(broker, postgres, redis, tmp)
    finally:
        redis.stop()
        broker.stop()
        postgres.stop()
        if not os.environ.get("OMNICHAT_TEST_KEEP"):  # keep logs and data to debug a failure
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    """Settings pointing at the session's servers."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        broker_url=stack.broker.url,
        database_url=stack.postgres.url,
        redis_url=stack.redis.url,
        admin_token=ADMIN_TOKEN,
        secret_key=SecretBox.generate_key(),
        data_dir=stack.tmp,
        gateway_port=free_port(),
        produce_timeout_seconds=2.0,
        auth_cache_seconds=1.0,
        worker_web_port=free_port(),
        # The fakes listen on 127.0.0.1: the tests run with private provider URLs allowed,
        # except those of the production posture (tests/integration/test_outbound_policy.py).
        allow_private_provider_urls=True,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrated(settings: Settings) -> str:
    """The session database with every migration applied."""
    from storage.migrate import migrate

    assert settings.database_url
    await migrate(settings.database_url)
    return settings.database_url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(migrated: str) -> AsyncIterator[AsyncConnectionPool]:
    """A pool for checking the database directly."""
    from storage.db import open_pool

    p = await open_pool(migrated, max_size=4)
    yield p
    await p.close()


@dataclass
class Gateway:
    """A running gateway and a client session for it."""

    url: str
    http: aiohttp.ClientSession
    app: web.Application
    settings: Settings

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        workspace: str | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON or text)."""
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {key}"
        if workspace:
            h["X-Workspace-ID"] = workspace
        async with self.http.request(
            method, self.url + path, json=json, data=data, headers=h
        ) as resp:
            text = await resp.text()
            if resp.content_type == "application/json" and text:
                import json as _json

                return resp.status, _json.loads(text)
            return resp.status, text


async def start_gateway(settings: Settings) -> tuple[web.AppRunner, str, web.Application]:
    """Run the real gateway app on a loopback port."""
    from gateway.app import create_app

    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, f"http://127.0.0.1:{port}", app


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def gateway(settings: Settings, migrated: str) -> AsyncIterator[Gateway]:
    """The gateway of the session."""
    runner, url, app = await start_gateway(settings)
    async with aiohttp.ClientSession() as http:
        yield Gateway(url, http, app, settings)
    await runner.cleanup()


@dataclass
class Tenant:
    """A workspace with an admin key, created through the API."""

    id: str
    key: str
    key_id: str

    def headers(self) -> dict[str, str]:
        """Auth headers of this workspace's admin key."""
        return {"Authorization": f"Bearer {self.key}", "X-Workspace-ID": self.id}


async def make_tenant(gw: Gateway, name: str = "Acme", plan: str = "free") -> Tenant:
    """Create a workspace through the platform admin API."""
    status, body = await gw.call(
        "POST", "/api/v1/tenants/workspaces", key=ADMIN_TOKEN, json={"name": name, "plan": plan}
    )
    assert status == 201, body
    return Tenant(body["id"], body["api_key"]["key"], body["api_key"]["id"])


@pytest_asyncio.fixture(loop_scope="session")
async def tenant(gateway: Gateway) -> Tenant:
    """A fresh workspace for one test."""
    return await make_tenant(gateway)


async def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fakes() -> AsyncIterator[Any]:
    """Local servers playing Meta's Graph API, Evolution and an OpenAI-compatible LLM."""
    from tests.fakes.evolution_api import FakeEvolutionAPI
    from tests.fakes.graph_api import FakeGraphAPI
    from tests.fakes.openai_api import FakeOpenAI

    async with (
        FakeGraphAPI() as graph,
        FakeEvolutionAPI() as evolution,
        FakeOpenAI(api_key="sk-test") as llm,
    ):
        yield Fakes(graph, evolution, llm)


@dataclass
class Fakes:
    """The third parties of the session."""

    graph: Any
    evolution: Any
    llm: Any


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def worker(
    settings: Settings, stack: Stack, migrated: str, fakes: Fakes
) -> AsyncIterator[Any]:
    """One stream worker for the session (its own consumer group), answering with the fake LLM."""
    from tests.integration.helpers import WorkerProcess

    local = settings.model_copy(
        update={
            "llm_base_url": fakes.llm.base_url,
            "llm_api_key": SecretStr("sk-test"),
            # Its admin views trust a cached key this long: only the auth epoch can make
            # them see a revocation at once (test_two_gateways.py).
            "auth_cache_seconds": 30.0,
        }
    )
    proc = WorkerProcess(local, stack.tmp / "worker.log").start()
    yield proc
    proc.stop()
