"""Pipeline benchmark: webhook in → reply persisted, through the whole stack, one worker.

Starts a fresh Tansu broker, PostgreSQL and Redis, the gateway and one worker (sandbox
provider, offline responder: no network), then:

1. throughput: N messages over many conversations as fast as the gateway takes them;
   messages/s end to end = N / (last reply persisted - first webhook accepted);
2. latency: a steady rate (default 50 messages/s) for a while; p50/p99 from the
   webhook accepted by the gateway (``webhook_events.received_at``) to the reply
   persisted as sent (``messages.sent_at``).

Run: ``.venv/bin/python ops/bench/pipeline.py [--messages 3000 --conversations 300]``.
Every run starts on a fresh broker (Tansu slows as its in-memory logs grow).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import psycopg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from omnichat.embedded import (  # noqa: E402
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedRedis,
    free_port,
)
from storage.migrate import migrate  # noqa: E402
from storage.secrets import SecretBox  # noqa: E402

ADMIN = "bench-admin"


class Stack:
    """Everything the benchmark starts, stopped in reverse order."""

    def __init__(self, tmp: Path, fetch_wait_ms: int) -> None:
        self.tmp = tmp
        self.fetch_wait_ms = fetch_wait_ms
        self.broker = EmbeddedBroker(log_path=tmp / "broker.log")
        self.pg = EmbeddedPostgres(tmp / "pg")
        self.redis = EmbeddedRedis(tmp / "redis")
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        """Servers, migrations, gateway and one worker."""
        self.broker.start()
        self.pg.start()
        self.redis.start()
        asyncio.run(migrate(self.pg.url))
        env = dict(
            os.environ,
            OMNICHAT_BROKER_URL=self.broker.url,
            OMNICHAT_DATABASE_URL=self.pg.url,
            OMNICHAT_REDIS_URL=self.redis.url,
            OMNICHAT_SECRET_KEY=SecretBox.generate_key(),
            OMNICHAT_ADMIN_TOKEN=ADMIN,
            OMNICHAT_GATEWAY_PORT=str(self.port),
            OMNICHAT_LOG_LEVEL="WARNING",
            OMNICHAT_WORKER_WEB_PORT=str(free_port()),
            OMNICHAT_WORKER_ID=f"bench-{uuid.uuid4().hex[:6]}",
            OMNICHAT_FETCH_MAX_WAIT_MS=str(self.fetch_wait_ms),
        )
        for env_key in ("OMNICHAT_LLM_BASE_URL", "OMNICHAT_LLM_API_KEY"):
            env.pop(env_key, None)
        for part in ("gateway", "worker"):
            log = open(self.tmp / f"{part}.log", "wb")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "omnichat.cli", part],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )

    def stop(self) -> None:
        """Stop children, then servers."""
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.redis.stop()
        self.broker.stop()
        self.pg.stop()


async def setup_tenant(http: aiohttp.ClientSession, base: str, db_url: str) -> tuple[dict, str]:
    """A workspace, a published agent and a sandbox channel bound to it."""
    for _ in range(100):
        try:
            async with http.get(base + "/readyz") as r:
                if r.status == 200:
                    break
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    async with http.post(
        base + "/api/v1/tenants/workspaces",
        json={"name": "Bench", "plan": "enterprise"},
        headers={"Authorization": f"Bearer {ADMIN}"},
    ) as r:
        ws = await r.json()
    headers = {"Authorization": f"Bearer {ws['api_key']['key']}", "X-Workspace-ID": ws["id"]}
    with psycopg.connect(db_url, autocommit=True) as conn:
        agent = conn.execute(
            "INSERT INTO agents (workspace_id, name) VALUES (%s, 'bench') RETURNING id", (ws["id"],)
        ).fetchone()[0]
        version = conn.execute(
            "INSERT INTO agent_versions (workspace_id, agent_id, number, status, system_prompt,"
            " fallback_text) VALUES (%s, %s, 1, 'published', 'Atendente', 'Obrigado!')"
            " RETURNING id",
            (ws["id"], agent),
        ).fetchone()[0]
        conn.execute("UPDATE agents SET published_version_id = %s WHERE id = %s", (version, agent))
    async with http.post(
        base + "/api/v1/channels/",
        headers=headers,
        json={"name": "bench", "provider": "sandbox", "config": {}, "agent_id": str(agent)},
    ) as r:
        channel = await r.json()
    return headers, channel["id"]


async def send_all(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict,
    bodies: list[dict],
    *,
    rate: float | None,
    concurrency: int = 32,
) -> int:
    """POST the bodies, at a fixed rate or as fast as ``concurrency`` allows; errors counted."""
    errors = 0
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def post(body: dict) -> None:
        nonlocal errors
        async with http.post(url, headers=headers, json=body) as r:
            if r.status != 200:
                errors += 1
            await r.read()

    if rate is None:

        async def worker() -> None:
            while not queue.empty():
                await post(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return errors
    start = time.perf_counter()
    tasks = []
    for i, body in enumerate(bodies):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(body)))
    await asyncio.gather(*tasks)
    return errors


def replies_done(db_url: str, run: str) -> int:
    """Bot replies persisted as sent for messages of this run."""
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM messages o JOIN messages i ON i.id = o.in_reply_to"
            " WHERE o.author = 'bot' AND o.status = 'sent' AND i.provider_message_id LIKE %s",
            (f"{run}-%",),
        ).fetchone()[0]


def latencies(db_url: str, run: str) -> tuple[list[float], float, float]:
    """Per message: reply sent - webhook accepted (s); and the run's first/last instants."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM o.sent_at - w.received_at),"
            " extract(epoch FROM w.received_at), extract(epoch FROM o.sent_at)"
            " FROM messages i JOIN messages o ON o.in_reply_to = i.id AND o.author = 'bot'"
            " JOIN webhook_events w ON w.trace_id = i.trace_id"
            " WHERE i.provider_message_id LIKE %s AND o.status = 'sent'",
            (f"{run}-%",),
        ).fetchall()
    lat = [float(r[0]) for r in rows]
    return lat, min(float(r[1]) for r in rows), max(float(r[2]) for r in rows)


async def wait_replies(db_url: str, run: str, n: int, timeout: float) -> int:
    """Wait until n replies are persisted (or the timeout)."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = await asyncio.to_thread(replies_done, db_url, run)
        if done >= n:
            break
        await asyncio.sleep(0.5)
    return done


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux): unlike wall time, barely moved by
    other work on a shared machine, so runs compare across different loads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def bench(stack: Stack, args: argparse.Namespace) -> None:
    """Warm up, then the throughput and latency runs."""
    base = f"http://127.0.0.1:{stack.port}"
    async with aiohttp.ClientSession() as http:
        headers, channel = await setup_tenant(http, base, stack.pg.url)
        url = f"{base}/api/v1/webhooks/sandbox/{channel}"

        def bodies(run: str, n: int) -> list[dict]:
            return [
                {
                    "from": f"{run}-c{i % args.conversations}",
                    "text": f"Pergunta {i}: qual o horário de funcionamento no domingo?",
                    "message_id": f"{run}-{i}",
                }
                for i in range(n)
            ]

        warm = bodies("warm", 20)
        await send_all(http, url, headers, warm, rate=None)
        if await wait_replies(stack.pg.url, "warm", 20, 90) < 20:
            raise SystemExit("warm-up did not complete: see the worker log in " + str(stack.tmp))

        run = "lat"
        n = int(args.rate * args.seconds)
        lat_errors = await send_all(http, url, headers, bodies(run, n), rate=args.rate)
        lat_done = await wait_replies(stack.pg.url, run, n, 120)
        lat, _, _ = await asyncio.to_thread(latencies, stack.pg.url, run)
        print(
            f"  latency run: p50 {pct(lat, 0.5) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms",
            flush=True,
        )
        results = []
        worker = stack.procs[1].pid
        for rep in range(args.repeat):
            run = f"tp{rep}"
            cpu0 = cpu_seconds(worker)
            t0 = time.perf_counter()
            errors = await send_all(http, url, headers, bodies(run, args.messages), rate=None)
            ingest = time.perf_counter() - t0
            done = await wait_replies(stack.pg.url, run, args.messages, 300)
            cpu_ms = (cpu_seconds(worker) - cpu0) * 1000 / args.messages
            _, first, last = await asyncio.to_thread(latencies, stack.pg.url, run)
            results.append((args.messages / (last - first), ingest, errors, done, cpu_ms))
            print(
                f"  throughput run {rep + 1}: {args.messages / (last - first):7.1f} msg/s end to"
                f" end ({done}/{args.messages} replied, {errors} errors, gateway took"
                f" {args.messages / ingest:.0f} msg/s, worker CPU {cpu_ms:.2f} ms/msg)",
                flush=True,
            )

    tps = [r[0] for r in results]
    cpus = [r[4] for r in results]
    print()
    print(
        f"pipeline benchmark (one worker, sandbox, offline responder, fetch wait "
        f"{stack.fetch_wait_ms} ms, {os.cpu_count()} cores)"
    )
    print(
        f"  throughput: median {statistics.median(tps):.1f} msg/s end to end over "
        f"{args.repeat} runs of {args.messages} messages in {args.conversations} conversations"
        f" (worker CPU: median {statistics.median(cpus):.2f} ms per message)"
    )
    print(
        f"  latency at {args.rate:.0f} msg/s for {args.seconds}s: {lat_done}/{n} replied, "
        f"{lat_errors} errors, p50 {pct(lat, 0.5) * 1000:.0f} ms,"
        f" p99 {pct(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
    )


def main() -> None:
    """Parse arguments, run, always stop what was started."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--conversations", type=int, default=300)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fetch-wait-ms", type=int, default=20)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="omnichat-bench-pipeline-"))
    stack = Stack(tmp, args.fetch_wait_ms)
    try:
        stack.start()
        asyncio.run(bench(stack, args))
    finally:
        stack.stop()
        if not os.environ.get("OMNICHAT_BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
