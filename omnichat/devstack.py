"""``omnichat dev``: the whole system on one machine with embedded defaults.

Starts what the settings do not point elsewhere (Tansu, PostgreSQL + pgvector,
Redis), applies migrations, creates the topics, then runs the gateway and one
worker as child processes. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from omnichat.embedded import EmbeddedBroker, EmbeddedPostgres, EmbeddedRedis, die_with_parent
from omnichat.settings import Settings


def _persisted_secret(path: Path, make: callable) -> str:  # type: ignore[valid-type]
    """A secret kept in the data dir so that a second run reuses it."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


@dataclass
class DevStack:
    """The embedded servers and child processes of one ``omnichat dev`` run."""

    settings: Settings
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    children: list[subprocess.Popen] = field(default_factory=list)

    def start_services(self) -> Settings:
        """Start the embedded servers the settings leave unset; return complete settings."""
        s = self.settings
        data = s.data_dir.resolve()
        data.mkdir(parents=True, exist_ok=True)
        updates: dict[str, object] = {"data_dir": data}
        if s.admin_token is None:
            updates["admin_token"] = SecretStr(
                _persisted_secret(data / "admin_token", lambda: f"adm_{secrets.token_urlsafe(24)}")
            )
        if s.secret_key is None and s.secret_keys is None:
            from storage.secrets import SecretBox

            updates["secret_key"] = SecretStr(
                _persisted_secret(data / "secret.key", SecretBox.generate_key)
            )
        if s.broker_url is None:
            self.broker = EmbeddedBroker(log_path=data / "broker.log").start()
            updates["broker_url"] = self.broker.url
        if s.database_url is None:
            self.postgres = EmbeddedPostgres(data / "postgres").start()
            updates["database_url"] = self.postgres.url
        if s.redis_url is None:
            self.redis = EmbeddedRedis(data / "redis").start()
            updates["redis_url"] = self.redis.url
        if "allow_private_provider_urls" not in s.model_fields_set:
            # Development talks to local fakes and gateways (Evolution on localhost):
            # allowed here unless the variable says otherwise; production's default is no.
            updates["allow_private_provider_urls"] = True
        self.settings = s.model_copy(update=updates)
        return self.settings

    def child_env(self) -> dict[str, str]:
        """The environment children get: every resolved URL and secret as OMNICHAT_*."""
        s = self.settings
        env = dict(os.environ)
        for name, value in {
            "BROKER_URL": s.broker_url,
            "DATABASE_URL": s.database_url,
            "REDIS_URL": s.redis_url,
            "ADMIN_TOKEN": s.admin_token.get_secret_value() if s.admin_token else None,
            "SECRET_KEY": s.secret_key.get_secret_value() if s.secret_key else None,
            "SECRET_KEYS": s.secret_keys.get_secret_value() if s.secret_keys else None,
            "DATA_DIR": str(s.data_dir),
            "ALLOW_PRIVATE_PROVIDER_URLS": str(s.allow_private_provider_urls).lower(),
        }.items():
            if value is not None:
                env[f"OMNICHAT_{name}"] = str(value)
        return env

    def spawn(self, *args: str) -> subprocess.Popen:
        """Run ``omnichat <args>`` as a child in its own process group."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "omnichat.cli", *args],
            env=self.child_env(),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.children.append(proc)
        return proc

    def stop(self) -> None:
        """Stop children first (they flush), then the servers; safe to call twice."""
        for proc in self.children:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.children:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.children.clear()
        for server in (self.redis, self.broker, self.postgres):
            if server is not None:
                server.stop()


def run_dev(settings: Settings) -> int:
    """Run the whole stack until Ctrl-C or SIGTERM."""
    from storage.migrate import migrate
    from streams.topics import ensure_topics

    stack = DevStack(settings)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        s = stack.start_services()
        assert s.database_url and s.broker_url
        applied = asyncio.run(migrate(s.database_url))
        asyncio.run(ensure_topics(s.broker_url, s.topic_partitions))
        gateway = stack.spawn("gateway")
        worker = stack.spawn("worker")
        base = f"http://{s.gateway_host}:{s.gateway_port}"
        token = s.admin_token.get_secret_value() if s.admin_token else ""
        db_label = "embedded PostgreSQL 16 + pgvector" if stack.postgres else "external"
        egress = (
            "private and loopback addresses allowed (dev; "
            "OMNICHAT_ALLOW_PRIVATE_PROVIDER_URLS=false for production's policy)"
            if s.allow_private_provider_urls
            else "public addresses only"
        )
        print(
            "\nOmnichat is starting (embedded defaults)\n"
            f"  data dir      {s.data_dir}\n"
            f"  migrations    {', '.join(applied) or 'up to date'}\n"
            f"  broker        {s.broker_url}{' (embedded Tansu)' if stack.broker else ''}\n"
            f"  database      {db_label}\n"
            f"  redis         {s.redis_url}{' (embedded)' if stack.redis else ''}\n"
            f"  provider URLs {egress}\n"
            f"  gateway       {base}   (pid {gateway.pid})\n"
            f"  readiness     {base}/readyz\n"
            f"  API docs      {base}/api/v1/openapi.json\n"
            f"  metrics       {base}/metrics (gateway), "
            f"http://127.0.0.1:{s.worker_web_port}/metrics (worker, pid {worker.pid})\n"
            f"  admin views   http://127.0.0.1:{s.worker_web_port}/api/v1/stats/"
            "{usage,conversations,channels,agent-runs,quota} (worker)\n"
            f"  admin token   {token}\n\n"
            "Create a workspace:\n"
            f"  curl -s -X POST {base}/api/v1/tenants/workspaces -H 'Authorization: Bearer "
            f"{token}' -H 'Content-Type: application/json' -d '{{\"name\": \"Acme\"}}'\n\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for proc in stack.children:
                if proc.poll() is not None:
                    print(
                        f"a child process exited with code {proc.returncode}; stopping", flush=True
                    )
                    stopping = True
            time.sleep(0.2)
        return 0
    finally:
        stack.stop()
