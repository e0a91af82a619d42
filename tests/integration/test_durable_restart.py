"""`omnichat dev` stopped and started again: nothing it acknowledged is lost or answered twice.

Each test runs the real ``python -m omnichat.cli dev`` (``make run``) as a child: its own
embedded Tansu (which keeps nothing across a stop) and Redis, a database of its own on the
session's PostgreSQL (which, like a real one, survives), and the session's fake Graph API and
LLM. Acknowledged webhooks are then either drained by a clean stop (Ctrl-C), or, after a
SIGKILL of every process (gateway, worker, broker, Redis, dev itself), replayed from the
journal by the next start (gateway/journal.py).

The one duplicate allowed is the one docs/ARCHITECTURE.md names: a reply whose provider call
was under way when everything was killed (its row left ``sending``) is sent again, since the
provider's answer was never recorded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import pytest_asyncio
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from omnichat.embedded import die_with_parent, free_port
from storage.db import open_pool
from storage.secrets import SecretBox
from tests.conftest import ADMIN_TOKEN, Fakes, Stack, Tenant, wait_until
from tests.fakes.graph_api import DEFAULT_ACCESS_TOKEN
from tests.integration.helpers import sign
from tests.integration.test_pipeline import APP_SECRET, cloud_text, make_agent

pytestmark = pytest.mark.slow

REPLY = "Resposta simulada para: {}"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found, then theirs), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Dev:
    """``omnichat dev`` as a child process, started and stopped as a user would."""

    tmp: Path
    database_url: str
    fakes: Fakes
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    secret_key: str = field(default_factory=SecretBox.generate_key)
    worker_id: str = field(default_factory=lambda: f"durable-{uuid.uuid4().hex[:8]}")
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        """The gateway."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Everything dev and its children printed, across starts."""
        return self.tmp / "dev.log"

    def log(self) -> str:
        """The log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start dev (a fresh broker and Redis each time; the same database)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHAT_")}
        env.update(
            OMNICHAT_DATA_DIR=str(self.tmp / "data"),
            OMNICHAT_DATABASE_URL=self.database_url,
            OMNICHAT_ADMIN_TOKEN=ADMIN_TOKEN,
            OMNICHAT_SECRET_KEY=self.secret_key,
            OMNICHAT_GATEWAY_PORT=str(self.port),
            OMNICHAT_WORKER_WEB_PORT=str(free_port()),
            OMNICHAT_WORKER_ID=self.worker_id,
            OMNICHAT_LLM_BASE_URL=self.fakes.llm.base_url,
            OMNICHAT_LLM_API_KEY="sk-test",
            OMNICHAT_LOG_LEVEL="INFO",
            **self.extra_env,
        )
        self.starts += 1
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "omnichat.cli", "dev"],
                env=env,
                cwd=self.tmp,  # no .env of the repository
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    async def ready(self, timeout: float = 120.0) -> None:
        """Until /readyz answers 200 (the journal's replay included)."""

        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"dev exited ({self.proc.returncode}):\n{self.log()[-5000:]}")
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(self.url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r,
                ):
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await wait_until(up, timeout=timeout, interval=0.2)

    def kill_everything(self) -> list[int]:
        """SIGKILL dev and every process it started (children first: none gets to stop
        cleanly); returns the pids killed."""
        assert self.proc is not None
        pids = [*descendants(self.proc.pid), self.proc.pid]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        return pids

    def stop(self) -> None:
        """Whatever state it is in: gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill_everything()


@pytest_asyncio.fixture(loop_scope="session")
async def dev(stack: Stack, migrated: str, fakes: Fakes) -> AsyncIterator[Dev]:
    """A dev stack on a fresh database of the session's PostgreSQL (started by the test)."""
    name = f"durable_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    d = Dev(stack.tmp / name, make_conninfo(migrated, dbname=name), fakes)
    try:
        yield d
    finally:
        d.stop()
        async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(loop_scope="session")
async def dev_pool(dev: Dev) -> AsyncIterator[AsyncConnectionPool]:
    """A pool on the dev stack's database (open after its first start migrated it)."""
    pools: list[AsyncConnectionPool] = []

    class Lazy:
        async def get(self) -> AsyncConnectionPool:
            if not pools:
                pools.append(await open_pool(dev.database_url, max_size=4))
            return pools[0]

    yield Lazy()  # type: ignore[misc]
    for p in pools:
        await p.close()


# --- what a test does through the dev gateway ----------------------------------------------


@dataclass
class Shop:
    """A workspace with an agent and a Cloud API channel pointed at the fake Graph API."""

    tenant: Tenant
    channel_id: str
    phone_number_id: str


async def call(
    dev: Dev,
    method: str,
    path: str,
    *,
    key: str | None = None,
    workspace: str | None = None,
    json: Any = None,
) -> tuple[int, Any]:
    """One request to the dev gateway."""
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if workspace:
        headers["X-Workspace-ID"] = workspace
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, dev.url + path, json=json, headers=headers) as r,
    ):
        return r.status, await r.json()


async def open_shop(dev: Dev, pool: AsyncConnectionPool) -> Shop:
    """Workspace (admin API), published agent, Cloud channel (API)."""
    status, ws = await call(  # the free plan's 1,000 messages a month would cut a burst short
        dev,
        "POST",
        "/api/v1/tenants/workspaces",
        key=ADMIN_TOKEN,
        json={"name": "Padaria", "plan": "enterprise"},
    )
    assert status == 201, ws
    tenant = Tenant(ws["id"], ws["api_key"]["key"], ws["api_key"]["id"])
    agent_id = await make_agent(pool, tenant.id)
    phone = f"1065{uuid.uuid4().int % 10**8}"
    status, ch = await call(
        dev,
        "POST",
        "/api/v1/channels/",
        key=tenant.key,
        workspace=tenant.id,
        json={
            "name": "whatsapp",
            "provider": "whatsapp_cloud",
            "agent_id": agent_id,
            "config": {
                "phone_number_id": phone,
                "access_token": DEFAULT_ACCESS_TOKEN,
                "app_secret": APP_SECRET,
                "verify_token": "v",
                "base_url": dev.fakes.graph.base_url,
            },
        },
    )
    assert status == 201, ch
    shop = Shop(tenant, ch["id"], phone)
    # One message through the whole pipeline first: the worker is consuming before a burst.
    warm, _ = await burst(dev, shop, messages=1, conversations=1, connections=1)
    await every_ack_answered_once(dev, pool, shop, warm, timeout=120, settle=0)
    return shop


@dataclass
class Burst:
    """Webhooks sent, and those the gateway acknowledged (wamid → text)."""

    senders: list[str]
    acked: dict[str, str] = field(default_factory=dict)
    refused: int = 0


async def burst(
    dev: Dev,
    shop: Shop,
    *,
    messages: int,
    conversations: int,
    kill_after: int | None = None,
    connections: int = 32,
) -> tuple[Burst, list[int]]:
    """Signed Cloud webhooks, ``connections`` at a time (conversations take turns); with
    ``kill_after``, every dev process is SIGKILLed once that many are acknowledged."""
    senders = [f"5511{uuid.uuid4().int % 10**9:09d}" for _ in range(conversations)]
    out = Burst(senders)
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for i in range(messages):
        sender = senders[i % conversations]
        queue.put_nowait((sender, f"{sender} {i // conversations}"))
    killed: list[int] = []
    url = f"{dev.url}/api/v1/webhooks/whatsapp/{shop.channel_id}"

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty() and not killed:
            sender, text = queue.get_nowait()
            wamid = f"wamid.{uuid.uuid4().hex}"
            body = cloud_text(shop.phone_number_id, sender, text, wamid=wamid)
            headers = {"X-Hub-Signature-256": sign(body, APP_SECRET)}
            try:
                async with http.post(url, data=body, headers=headers) as r:
                    answer = await r.json()
            except (TimeoutError, aiohttp.ClientError):
                out.refused += 1
                continue
            if r.status == 200 and answer.get("idempotent") is False:
                out.acked[wamid] = text
                if kill_after is not None and len(out.acked) >= kill_after and not killed:
                    killed.extend(dev.kill_everything())
            else:
                out.refused += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(connections)))
    return out, killed


async def outcome(pool: AsyncConnectionPool, channel_id: str) -> dict[str, dict[str, Any]]:
    """Per inbound provider message id: how many inbound rows, and its bot replies."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT i.provider_message_id AS wamid, i.text,"
            " count(*) OVER (PARTITION BY i.provider_message_id) AS copies,"
            " (SELECT array_agg(o.status) FROM messages o WHERE o.in_reply_to = i.id"
            "  AND o.author = 'bot') AS replies"
            " FROM messages i WHERE i.channel_id = %s AND i.direction = 'in'",
            (uuid.UUID(channel_id),),
        )
        return {r["wamid"]: r for r in await cur.fetchall()}


async def sending_at_kill(pool: AsyncConnectionPool, channel_id: str) -> set[str]:
    """Texts of the inbound messages whose reply was mid-send when everything was killed."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT i.text FROM messages o JOIN messages i ON i.id = o.in_reply_to"
            " WHERE o.channel_id = %s AND o.author = 'bot' AND o.status = 'sending'",
            (uuid.UUID(channel_id),),
        )
        return {r["text"] for r in await cur.fetchall()}


def replies_by_text(fakes: Fakes, senders: list[str]) -> Counter[str]:
    """How many times the fake Graph API got each reply text, for these senders."""
    ours = set(senders)
    return Counter(text for to, text in fakes.graph.sent_texts() if to in ours)


async def every_ack_answered_once(
    dev: Dev,
    pool: AsyncConnectionPool,
    shop: Shop,
    sent: Burst,
    *,
    may_repeat: set[str] = frozenset(),  # type: ignore[assignment]
    timeout: float = 240.0,
    settle: float = 2.0,
) -> None:
    """Every acknowledged message stored once with one bot reply, sent; the provider got
    each reply once (``may_repeat``: those mid-send at a kill, at most twice)."""

    async def done() -> bool:
        rows = await outcome(pool, shop.channel_id)
        return all(
            w in rows and rows[w]["replies"] and rows[w]["replies"] == ["sent"] for w in sent.acked
        )

    try:
        await wait_until(done, timeout=timeout, interval=1.0)
    except AssertionError:
        rows = await outcome(pool, shop.channel_id)
        missing = [w for w in sent.acked if w not in rows]
        unsent = [w for w in sent.acked if w in rows and rows[w]["replies"] != ["sent"]]
        raise AssertionError(
            f"{len(sent.acked)} acknowledged: {len(missing)} not stored, {len(unsent)} not "
            f"answered (e.g. {[rows[w]['replies'] for w in unsent[:5]]})\n"
            f"{dev.log()[-8000:]}"
        ) from None
    await asyncio.sleep(settle)  # room for a late duplicate to show up
    rows = await outcome(pool, shop.channel_id)
    assert all(rows[w]["copies"] == 1 for w in sent.acked)
    assert all(rows[w]["replies"] == ["sent"] for w in sent.acked)
    got = replies_by_text(dev.fakes, sent.senders)
    for text in sent.acked.values():
        n = got[REPLY.format(text)]
        sender = text.split(" ", 1)[0]
        seen = sorted(t for to, t in dev.fakes.graph.sent_texts() if to == sender)
        if text in may_repeat:
            assert 1 <= n <= 2, (text, n, seen)
        else:
            assert n == 1, (text, n, seen)
    # Nothing was answered that no one sent; and a message the gateway did not acknowledge
    # (cut by the kill) is answered at most once if it was stored at all.
    assert all(n <= 2 for n in got.values())


async def journal_size(pool: AsyncConnectionPool) -> int:
    """Records left in the journal."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM journal")
        return int((await cur.fetchone())["n"])


# --- the tests -----------------------------------------------------------------------------


async def test_ctrl_c_after_a_burst_drains_and_the_restart_answers_nothing_twice(
    dev: Dev, dev_pool: Any
) -> None:
    # Room for a loaded machine: the test is that the drain completes, not how fast.
    dev.extra_env["OMNICHAT_DRAIN_TIMEOUT_SECONDS"] = "600"
    dev.start()
    await dev.ready()
    pool = await dev_pool.get()
    shop = await open_shop(dev, pool)
    sent, _ = await burst(dev, shop, messages=2000, conversations=50)
    assert len(sent.acked) == 2000 and sent.refused == 0

    dev.proc.send_signal(signal.SIGINT)  # type: ignore[union-attr]
    # While it drains, the gateway refuses new work with 503 and Retry-After.
    status, headers = 0, {}
    body = cloud_text(shop.phone_number_id, sent.senders[0], "late")
    url = f"{dev.url}/api/v1/webhooks/whatsapp/{shop.channel_id}"
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.post(
                    url, data=body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET)}
                ) as r:
                    status, headers = r.status, dict(r.headers)
            except aiohttp.ClientError:
                pass
            if status == 503:
                break
            await asyncio.sleep(0.05)
    assert status == 503 and headers.get("Retry-After"), (status, headers)
    assert dev.proc is not None
    # In a thread: the fake LLM and Graph API the draining worker calls run on this loop.
    await asyncio.to_thread(dev.proc.wait, 660)
    log = dev.log()
    assert "intake stopped" in log
    assert "drained" in log and "drain timed out" not in log, log[-6000:]
    # Everything was carried to its end before the stop: the journal kept nothing.
    assert await journal_size(pool) == 0
    rows = await outcome(pool, shop.channel_id)
    assert all(rows[w]["replies"] == ["sent"] for w in sent.acked)

    dev.start()
    await dev.ready()
    await every_ack_answered_once(dev, pool, shop, sent)


@pytest.mark.parametrize("moment", [0.2, 0.55, 0.9])
async def test_sigkill_of_everything_mid_burst_loses_no_acknowledged_message(
    dev: Dev, dev_pool: Any, moment: float
) -> None:
    total = 500
    dev.start()
    await dev.ready()
    pool = await dev_pool.get()
    shop = await open_shop(dev, pool)
    # Few connections: the pipeline keeps up with part of the burst, so the kill finds
    # messages at every stage (on the broker only, stored, mid-send, answered).
    sent, killed = await burst(
        dev, shop, messages=total, conversations=25, kill_after=int(total * moment), connections=4
    )
    assert killed, "the burst ended before the kill"
    assert len(sent.acked) >= int(total * moment)
    # What the kill interrupted: on the broker (lost with it), and mid-send.
    mid_send = await sending_at_kill(pool, shop.channel_id)
    at_kill = await outcome(pool, shop.channel_id)
    stored = sum(1 for w in sent.acked if w in at_kill)
    answered = sum(1 for w in sent.acked if w in at_kill and at_kill[w]["replies"] == ["sent"])
    print(  # what the kill interrupted (pytest -s shows it)
        f"kill at {moment}: {len(sent.acked)} acknowledged, {stored} stored, {answered} answered,"
        f" {len(mid_send)} mid-send"
    )
    assert answered < len(sent.acked), "everything was done before the kill"

    dev.start()
    await dev.ready()
    await every_ack_answered_once(dev, pool, shop, sent, may_repeat=mid_send)
    assert "took over" in dev.log()  # the dead gateway's journal was replayed


async def test_a_human_reply_and_a_document_accepted_before_a_sigkill_survive_it(
    dev: Dev, dev_pool: Any
) -> None:
    dev.start()
    await dev.ready()
    pool = await dev_pool.get()
    shop = await open_shop(dev, pool)
    t = shop.tenant
    status, convs = await call(dev, "GET", "/api/v1/conversations/", key=t.key, workspace=t.id)
    assert status == 200 and len(convs["items"]) == 1, convs
    conversation_id = convs["items"][0]["id"]
    status, kb = await call(
        dev,
        "POST",
        "/api/v1/rag/knowledge-bases",
        key=t.key,
        workspace=t.id,
        json={"name": "faq", "language": "pt"},
    )
    assert status == 201, kb

    status, doc = await call(
        dev,
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb['id']}/documents",
        key=t.key,
        workspace=t.id,
        json={"title": "Horários", "text": "Abrimos às 7h e fechamos às 20h, todos os dias."},
    )
    assert status == 202, doc
    human_text = f"Olá, aqui é a Ana da padaria ({uuid.uuid4().hex[:6]})"
    status, reply = await call(
        dev,
        "POST",
        f"/api/v1/conversations/{conversation_id}/messages",
        key=t.key,
        workspace=t.id,
        json={"text": human_text},
    )
    assert status == 202, reply
    # At once: the fake Graph API runs on this event loop, so no send completes before this.
    dev.kill_everything()
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status FROM messages WHERE id = %s", (reply["id"],))
        assert (await cur.fetchone())["status"] in ("pending", "sending")  # not sent yet
        cur = await conn.execute("SELECT status FROM documents WHERE id = %s", (doc["id"],))
        assert (await cur.fetchone())["status"] in ("pending", "processing")

    dev.start()
    await dev.ready()

    async def delivered() -> bool:
        return any(text == human_text for _, text in dev.fakes.graph.sent_texts())

    async def ingested() -> bool:
        status, got = await call(
            dev,
            "GET",
            f"/api/v1/rag/knowledge-bases/{kb['id']}/documents/{doc['id']}",
            key=t.key,
            workspace=t.id,
        )
        return status == 200 and got["status"] == "ready"

    # Well inside the ingest sweep's STUCK_AFTER (120 s): the journal, not the sweep, brings
    # the document back.
    await wait_until(delivered, timeout=60, interval=0.5)
    await wait_until(ingested, timeout=90, interval=0.5)
    await asyncio.sleep(2.0)
    assert [text for _, text in dev.fakes.graph.sent_texts()].count(human_text) == 1
