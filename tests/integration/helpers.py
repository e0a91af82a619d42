"""Helpers of the integration tests: reading topics, running a worker, signing bodies."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg_pool import AsyncConnectionPool

from omnichat.embedded import die_with_parent, free_port
from omnichat.settings import Settings
from streams.topics import bootstrap_servers
from tests.conftest import Gateway, Tenant


async def read_topic(broker_url: str, topic: str, timeout: float = 5.0) -> list[Any]:
    """Every record now on a topic (no consumer group: a tap never joins the pipeline's)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(broker_url), enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if parts:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
            if asyncio.get_running_loop().time() > deadline:
                break
        return out
    finally:
        await consumer.stop()


def sign(body: bytes, secret: str) -> str:
    """Meta's X-Hub-Signature-256 for a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


WORKER_APP_NAME = "omnichat-test-worker"


class WorkerProcess:
    """``omnichat worker`` as a child process with its own consumer group."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        worker_id: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.worker_id = worker_id or f"omnichat-test-{uuid.uuid4().hex[:8]}"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.web_port = 0

    @property
    def web_url(self) -> str:
        """The worker's Faust web server (metrics, admin views)."""
        return f"http://127.0.0.1:{self.web_port}"

    def env(self) -> dict[str, str]:
        """The child's environment: the test settings as OMNICHAT_* variables."""
        s = self.settings
        self.web_port = free_port()  # a new one per start: the old socket may linger
        env = dict(os.environ)
        values = {
            "BROKER_URL": s.broker_url,
            "DATABASE_URL": s.database_url,
            "REDIS_URL": s.redis_url,
            "SECRET_KEY": s.secret_key.get_secret_value() if s.secret_key else None,
            "SECRET_KEYS": s.secret_keys.get_secret_value() if s.secret_keys else None,
            "ADMIN_TOKEN": s.admin_token.get_secret_value() if s.admin_token else None,
            "AUTH_CACHE_SECONDS": str(s.auth_cache_seconds),
            "WORKER_ID": self.worker_id,
            "WORKER_WEB_PORT": str(self.web_port),
            "TOPIC_PARTITIONS": str(s.topic_partitions),
            "LOG_LEVEL": "INFO",
            "ALLOW_PRIVATE_PROVIDER_URLS": str(s.allow_private_provider_urls).lower(),
        }
        if s.llm_base_url:
            values["LLM_BASE_URL"] = s.llm_base_url
        if s.llm_api_key:
            values["LLM_API_KEY"] = s.llm_api_key.get_secret_value()
        env.update({f"OMNICHAT_{k}": v for k, v in values.items() if v is not None})
        env["PGAPPNAME"] = WORKER_APP_NAME  # libpq: tests can find the worker's connections
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        """Start the worker."""
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omnichat.cli", "worker"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        out.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop it (SIGKILL to simulate a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> WorkerProcess:
        """Start again with the same consumer group (after a stop or a crash)."""
        self.stop()
        return self.start()

    def log(self) -> str:
        """Everything the worker printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class GatewayProcess:
    """``omnichat gateway`` as a child process: a second gateway with its own caches."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.extra_env = {f"OMNICHAT_{k.upper()}": v for k, v in env.items()}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        """Start it (``ready`` waits for it to answer)."""
        s = self.settings
        env = dict(os.environ)
        values = {
            "BROKER_URL": s.broker_url,
            "DATABASE_URL": s.database_url,
            "REDIS_URL": s.redis_url,
            "SECRET_KEY": s.secret_key.get_secret_value() if s.secret_key else None,
            "SECRET_KEYS": s.secret_keys.get_secret_value() if s.secret_keys else None,
            "ADMIN_TOKEN": s.admin_token.get_secret_value() if s.admin_token else None,
            "TOPIC_PARTITIONS": str(s.topic_partitions),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "LOG_LEVEL": "INFO",
        }
        env.update({f"OMNICHAT_{k}": v for k, v in values.items() if v is not None})
        env.update(self.extra_env)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omnichat.cli", "gateway"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        out.close()
        return self

    async def ready(self, timeout: float = 30.0) -> GatewayProcess:
        """Wait until ``/healthz`` answers."""
        import aiohttp

        assert self.proc is not None, "start it first"
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gateway exited {self.proc.returncode}: {self.log()}")
                try:
                    async with http.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"gateway did not start: {self.log()}")
                await asyncio.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        """Everything it printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def count_rows(pool: AsyncConnectionPool, sql: str, *params: Any) -> int:
    """``SELECT count(*)`` helper."""
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        row = await cur.fetchone()
        return int(next(iter(row.values())))


async def create_channel(
    gw: Gateway,
    tenant: Tenant,
    provider: str,
    config: dict,
    name: str = "channel",
    agent_id: str | None = None,
) -> dict:
    """A channel through the API."""
    body: dict[str, Any] = {"name": name, "provider": provider, "config": config}
    if agent_id:
        body["agent_id"] = agent_id
    status, ch = await gw.call(
        "POST", "/api/v1/channels/", key=tenant.key, workspace=tenant.id, json=body
    )
    assert status == 201, ch
    return ch


async def metric_total(url: str, name: str, timeout: float = 60.0) -> float:
    """The sum of a Prometheus metric's samples at ``url``/metrics (waits for the server)."""
    import aiohttp

    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/metrics") as r:
                    if r.status == 200:
                        text = await r.text()
                        break
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{url}/metrics did not answer within {timeout}s")
            await asyncio.sleep(0.2)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )
