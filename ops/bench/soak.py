"""Soak: at least 100,000 messages through the whole stack, measured slice by slice.

Starts the same stack as ``ops/bench/pipeline.py`` (a fresh Tansu broker, PostgreSQL,
Redis, the gateway and one worker; sandbox provider, offline responder) and keeps it up
for the whole run. Each slice is

1. a burst of ``--slice`` messages (default 10,000) over many conversations, as fast as the
   gateway takes them: throughput end to end = messages / (last reply persisted - first
   webhook accepted), and the worker's CPU per message;
2. a latency probe: ``--probe`` messages (default 300) at a steady ``--rate`` (default 30/s):
   p50/p99 from webhook accepted to reply persisted as sent.

After each slice it prints those figures, the broker's memory (RSS of the Tansu process),
how many records its topics hold and how many times the broker was restarted empty, then
compares the last slice with the first. The machine is shared: the load average is printed
with each slice.

As ``omnichat dev`` does, the stack restarts its embedded broker once its memory passes
``--broker-max-mb`` (default: ``OMNICHAT_EMBEDDED_BROKER_MAX_MB``'s default; 0 never, to
see the broker grow): omnichat/recycle.py. A webhook answered 503 is sent again, as a
provider would.

Run: ``.venv/bin/python ops/bench/soak.py [--slices 10 --slice 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from omnichat.recycle import BrokerRecycler, rss_mb  # noqa: E402
from omnichat.settings import Settings  # noqa: E402
from ops.bench.pipeline import (  # noqa: E402
    Stack,
    cpu_seconds,
    latencies,
    pct,
    send_all,
    setup_tenant,
    wait_replies,
)
from streams.offsets import end_offsets  # noqa: E402
from streams.topics import bootstrap_servers  # noqa: E402


class SoakStack(Stack):
    """The benchmark's stack, restarting its broker as ``omnichat dev`` does."""

    def __init__(self, tmp: Path, fetch_wait_ms: int, broker_max_mb: float) -> None:
        super().__init__(tmp, fetch_wait_ms)
        self.broker_max_mb = broker_max_mb
        self.retired_cpu = 0.0  # CPU of the workers already replaced
        self.recycler: BrokerRecycler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def worker_cpu(self) -> float:
        """CPU seconds of every worker so far."""
        with contextlib.suppress(OSError):
            return self.retired_cpu + cpu_seconds(self.procs[1].pid)
        return self.retired_cpu

    def start_recycling(self) -> None:
        """Check the broker's memory every few seconds in a thread; restart it when due."""
        if self.broker_max_mb <= 0:
            return
        settings = Settings(_env_file=None)  # type: ignore[call-arg]

        def stop_worker() -> None:  # drained: nothing to lose (as omnichat dev does)
            worker = self.procs[1]
            with contextlib.suppress(OSError):
                self.retired_cpu += cpu_seconds(worker.pid)
            worker.kill()
            worker.wait()

        def start_worker() -> None:
            self.procs[1] = self.spawn("worker")

        self.recycler = BrokerRecycler(
            self.broker,
            group=self.env["OMNICHAT_WORKER_ID"],
            partitions=settings.topic_partitions,
            topic_configs=settings.topic_configs,
            max_mb=self.broker_max_mb,
            pause_intake=lambda: self.procs[0].send_signal(signal.SIGSTOP),
            resume_intake=lambda: self.procs[0].send_signal(signal.SIGCONT),
            stop_workers=stop_worker,
            start_workers=start_worker,
        )

        def loop() -> None:
            while not self._stop.wait(5.0):
                assert self.recycler is not None
                self.recycler.maybe_recycle()

        self._thread = threading.Thread(target=loop, name="recycler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The recycler first, then everything else."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)
        super().stop()

    @property
    def restarts(self) -> int:
        """Times the broker was restarted empty."""
        return self.recycler.count if self.recycler else 0


async def broker_records(broker_url: str) -> int:
    """Records on every topic of the broker (sum of the partitions' end offsets)."""
    servers = bootstrap_servers(broker_url)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        topics = await admin.describe_topics(await admin.list_topics())
        tps = [
            TopicPartition(t["topic"], p["partition"])
            for t in topics
            for p in t["partitions"]
            if not t["topic"].startswith("__")
        ]
    finally:
        await admin.close()
    return sum((await end_offsets(servers, tps)).values())


@dataclass
class Slice:
    """One slice's figures."""

    number: int
    messages: int
    throughput: float
    cpu_ms: float
    p50_ms: float
    p99_ms: float
    broker_mb: float
    records: int
    restarts: int
    load: float
    errors: int


async def soak(stack: SoakStack, args: argparse.Namespace) -> list[Slice]:
    """Warm up, then the slices."""
    base = f"http://127.0.0.1:{stack.port}"
    out: list[Slice] = []
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

        await send_all(http, url, headers, bodies("warm", 20), rate=None)
        if await wait_replies(stack.pg.url, "warm", 20, 90) < 20:
            raise SystemExit("warm-up did not complete: see the worker log in " + str(stack.tmp))
        stack.start_recycling()
        print(
            f"{'slice':>5} {'msgs':>7} {'msg/s':>7} {'cpu ms':>6} {'p50 ms':>7} {'p99 ms':>7}"
            f" {'broker MB':>9} {'records':>9} {'restarts':>8} {'load':>5} {'errors':>6}",
            flush=True,
        )
        total = 0
        for n in range(1, args.slices + 1):
            run = f"s{n}"
            cpu0 = stack.worker_cpu()
            errors = await send_all(
                http, url, headers, bodies(run, args.slice), rate=None, retries=10
            )
            done = await wait_replies(stack.pg.url, run, args.slice, args.timeout)
            cpu_ms = (stack.worker_cpu() - cpu0) * 1000 / args.slice
            if done < args.slice:
                print(f"slice {n}: only {done}/{args.slice} replied in {args.timeout}s; stopping")
                break
            _, first, last = await asyncio.to_thread(latencies, stack.pg.url, run)
            probe = f"p{n}"
            errors += await send_all(
                http, url, headers, bodies(probe, args.probe), rate=args.rate, retries=10
            )
            await wait_replies(stack.pg.url, probe, args.probe, args.timeout)
            lat, _, _ = await asyncio.to_thread(latencies, stack.pg.url, probe)
            total += args.slice + args.probe
            s = Slice(
                number=n,
                messages=total,
                throughput=args.slice / (last - first),
                cpu_ms=cpu_ms,
                p50_ms=pct(lat, 0.5) * 1000,
                p99_ms=pct(lat, 0.99) * 1000,
                broker_mb=rss_mb(stack.broker.pid or 0),
                records=await broker_records(stack.broker.url),
                restarts=stack.restarts,
                load=os.getloadavg()[0],
                errors=errors,
            )
            out.append(s)
            print(
                f"{s.number:>5} {s.messages:>7} {s.throughput:>7.1f} {s.cpu_ms:>6.2f}"
                f" {s.p50_ms:>7.0f} {s.p99_ms:>7.0f} {s.broker_mb:>9.1f} {s.records:>9}"
                f" {s.restarts:>8} {s.load:>5.2f} {s.errors:>6}",
                flush=True,
            )
    return out


def summary(slices: list[Slice]) -> None:
    """The last slice against the first."""
    if len(slices) < 2:
        return
    a, z = slices[0], slices[-1]
    change = (z.throughput - a.throughput) / a.throughput * 100
    print(
        f"\nlast slice against the first: throughput {a.throughput:.1f} → {z.throughput:.1f}"
        f" msg/s ({change:+.1f}%), p99 {a.p99_ms:.0f} → {z.p99_ms:.0f} ms, broker"
        f" {a.broker_mb:.0f} → {z.broker_mb:.0f} MB (largest {max(s.broker_mb for s in slices):.0f}"
        f" MB), {z.restarts} broker restarts; within 15%: {abs(change) <= 15}"
    )


def main() -> None:
    """Parse arguments, run, always stop what was started."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=10)
    p.add_argument("--slice", type=int, default=10_000, help="messages per burst")
    p.add_argument("--probe", type=int, default=300, help="messages of each latency probe")
    p.add_argument("--rate", type=float, default=30.0, help="the probe's messages per second")
    p.add_argument("--conversations", type=int, default=300)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a slice may take")
    p.add_argument("--fetch-wait-ms", type=int, default=20)
    p.add_argument(
        "--broker-max-mb",
        type=float,
        default=Settings.model_fields["embedded_broker_max_mb"].default,
        help="restart the broker empty past this memory (0: never)",
    )
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="omnichat-bench-soak-"))
    stack = SoakStack(tmp, args.fetch_wait_ms, args.broker_max_mb)
    started = time.monotonic()
    try:
        stack.start()
        slices = asyncio.run(soak(stack, args))
        summary(slices)
        print(f"({(time.monotonic() - started) / 60:.1f} min, {os.cpu_count()} cores)")
    finally:
        stack.stop()
        if not os.environ.get("OMNICHAT_BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
