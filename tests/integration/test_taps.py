"""Taps: a topic's records of one workspace as Server-Sent Events, against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiokafka import ConsumerRecord

from gateway.errors import ApiError
from gateway.handlers import taps
from omnichat.tap import SseEvent, sse_events
from tests.conftest import Gateway, Tenant, make_tenant, wait_until
from tests.integration.helpers import create_channel

PIPELINE_TIMEOUT = 90.0  # the first test to use the session worker also waits for it to start


class Tap:
    """An open tap read in the background, its events queued for the test."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.events: asyncio.Queue[SseEvent] = asyncio.Queue()
        self.seen: list[SseEvent] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(aiohttp.ClientError):
            async for ev in sse_events(self.resp.content):
                await self.events.put(ev)

    async def until(self, predicate: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        """The data of the first event whose data matches (every event read is kept in seen)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no matching event within {timeout}s: {self.seen}")
            try:
                ev = await asyncio.wait_for(self.events.get(), left)
            except TimeoutError:
                continue
            self.seen.append(ev)
            data = json.loads(ev.data)
            if predicate(data):
                return data

    async def drain(self, idle: float = 1.0) -> list[SseEvent]:
        """Every event until the stream is quiet for ``idle`` seconds."""
        while True:
            try:
                self.seen.append(await asyncio.wait_for(self.events.get(), idle))
            except TimeoutError:
                return self.seen

    async def close(self) -> None:
        """Leave, as a client closing its connection does."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self.resp.close()


@contextlib.asynccontextmanager
async def open_tap(
    gw: Gateway, t: Tenant, topic: str, start: str = "now", key: str | None = None
) -> AsyncIterator[Tap]:
    """A tap of ``topic`` for ``t``; the start positions are fixed when this returns."""
    resp = await gw.http.get(
        f"{gw.url}/api/v1/taps/{topic}",
        params={"from": start},
        headers={"Authorization": f"Bearer {key or t.key}", "X-Workspace-ID": t.id},
    )
    if resp.status != 200:
        body = await resp.text()
        resp.release()
        raise AssertionError(f"tap refused: {resp.status} {body}")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    tap = Tap(resp)
    try:
        yield tap
    finally:
        await tap.close()


async def send_sandbox(gw: Gateway, t: Tenant, channel_id: str, text: str) -> None:
    """A sandbox message through the gateway."""
    status, body = await gw.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{channel_id}",
        key=t.key,
        workspace=t.id,
        json={"from": "tap-tester", "text": text},
    )
    assert status == 200, body


async def taps_closed() -> bool:
    """No tap left open in this process (the gateway fixture runs in it)."""
    return taps.active_taps() == 0


async def test_tap_shows_only_the_callers_workspace(gateway: Gateway, worker: Any) -> None:
    await wait_until(taps_closed, timeout=10)
    a = await make_tenant(gateway, "Tap A")
    b = await make_tenant(gateway, "Tap B")
    a_channel = await create_channel(gateway, a, "sandbox", {})
    b_channel = await create_channel(gateway, b, "sandbox", {})
    a_text, b_text = f"for A {uuid.uuid4()}", f"for B {uuid.uuid4()}"
    async with (
        open_tap(gateway, a, "messages.normalized") as a_tap,
        open_tap(gateway, b, "messages.normalized") as b_tap,
    ):
        assert taps.active_taps() == 2
        await send_sandbox(gateway, b, b_channel["id"], b_text)
        await b_tap.until(lambda d: d["value"]["text"] == b_text, PIPELINE_TIMEOUT)
        await send_sandbox(gateway, a, a_channel["id"], a_text)
        got = await a_tap.until(lambda d: d["value"]["text"] == a_text, PIPELINE_TIMEOUT)
        seen = await a_tap.drain(1.0)

    assert set(got) == {"partition", "offset", "timestamp", "key", "value"}
    assert got["value"]["workspace_id"] == a.id
    assert got["value"]["channel_id"] == a_channel["id"]
    assert got["key"] == f"{a_channel['id']}:tap-tester"
    assert datetime.fromisoformat(got["timestamp"]).tzinfo is not None
    for ev in seen:
        assert ev.event == "messages.normalized"
        data = json.loads(ev.data)
        assert ev.id == f"{data['partition']}:{data['offset']}"
        assert data["value"]["workspace_id"] == a.id, data
        assert b_text not in ev.data
    await wait_until(taps_closed, timeout=10)


async def test_raw_tap_from_earliest_offset_and_time(gateway: Gateway, tenant: Tenant) -> None:
    other = await make_tenant(gateway, "Raw other")
    channel = await create_channel(gateway, tenant, "sandbox", {})
    other_channel = await create_channel(gateway, other, "sandbox", {})
    before, after = f"raw before {uuid.uuid4()}", f"raw after {uuid.uuid4()}"
    await send_sandbox(gateway, other, other_channel["id"], f"not yours {uuid.uuid4()}")
    await send_sandbox(gateway, tenant, channel["id"], before)
    await asyncio.sleep(0.3)
    t0 = datetime.now(UTC)
    await asyncio.sleep(0.3)
    await send_sandbox(gateway, tenant, channel["id"], after)

    def body_text(data: dict[str, Any]) -> str:
        return json.loads(data["value"])["text"]

    async with open_tap(gateway, tenant, "webhooks.raw", "earliest") as tap:
        got = await tap.until(lambda d: body_text(d) == before)
        await tap.until(lambda d: body_text(d) == after)
        seen = await tap.drain(1.0)
    assert got["headers"]["workspace_id"] == tenant.id
    assert got["headers"]["channel_id"] == channel["id"]
    assert got["headers"]["provider"] == "sandbox"
    assert got["key"] == channel["id"]
    assert isinstance(got["value"], str), "the raw body is sent as text"
    assert {json.loads(e.data)["headers"]["workspace_id"] for e in seen} == {tenant.id}

    async with open_tap(gateway, tenant, "webhooks.raw", "0") as tap:
        await tap.until(lambda d: body_text(d) == before)

    async with open_tap(gateway, tenant, "webhooks.raw", t0.isoformat()) as tap:
        await tap.until(lambda d: body_text(d) == after)
        seen = await tap.drain(1.0)
    texts = [body_text(json.loads(e.data)) for e in seen]
    assert before not in texts, "a tap from a time starts at that time"
    await wait_until(taps_closed, timeout=10)


async def test_tap_now_sees_only_new_records(gateway: Gateway, tenant: Tenant) -> None:
    channel = await create_channel(gateway, tenant, "sandbox", {})
    old, new = f"old {uuid.uuid4()}", f"new {uuid.uuid4()}"
    await send_sandbox(gateway, tenant, channel["id"], old)
    async with open_tap(gateway, tenant, "webhooks.raw") as tap:
        await send_sandbox(gateway, tenant, channel["id"], new)
        await tap.until(lambda d: json.loads(d["value"])["text"] == new)
        seen = await tap.drain(0.5)
    assert all(old not in e.data for e in seen)
    await wait_until(taps_closed, timeout=10)


async def test_tap_auth_and_errors(gateway: Gateway, tenant: Tenant) -> None:
    await wait_until(taps_closed, timeout=10)
    other = await make_tenant(gateway, "Tap other")
    status, body = await gateway.call(
        "GET", "/api/v1/taps/no.such.topic", key=tenant.key, workspace=tenant.id
    )
    assert status == 404 and body["error"]["code"] == "not_found"
    for bad in ("later", "-1", "2024-13-01T00:00:00"):
        status, body = await gateway.call(
            "GET", f"/api/v1/taps/webhooks.raw?from={bad}", key=tenant.key, workspace=tenant.id
        )
        assert status == 400 and body["error"]["code"] == "invalid_parameter", bad
    status, _ = await gateway.call("GET", "/api/v1/taps/webhooks.raw")
    assert status == 401
    status, _ = await gateway.call("GET", "/api/v1/taps/webhooks.raw", workspace=tenant.id)
    assert status == 401
    status, _ = await gateway.call(
        "GET", "/api/v1/taps/webhooks.raw", key=tenant.key, workspace=other.id
    )
    assert status == 403

    status, key = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "tap reader", "scopes": ["read"]},
    )
    assert status == 201
    async with open_tap(gateway, tenant, "usage.events", key=key["key"]):
        assert taps.active_taps() == 1
    await wait_until(taps_closed, timeout=10)


async def test_closed_tap_leaves_no_consumer(gateway: Gateway, tenant: Tenant) -> None:
    await wait_until(taps_closed, timeout=10)
    async with open_tap(gateway, tenant, "messages.normalized"):
        assert taps.active_taps() == 1
        async with open_tap(gateway, tenant, "deadletter", "earliest"):
            assert taps.active_taps() == 2
    await wait_until(taps_closed, timeout=10)


async def test_too_many_taps(
    gateway: Gateway, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_until(taps_closed, timeout=10)
    monkeypatch.setattr(taps, "MAX_TAPS", 1)
    async with open_tap(gateway, tenant, "audit.events"):
        status, body = await gateway.call(
            "GET", "/api/v1/taps/audit.events", key=tenant.key, workspace=tenant.id
        )
        assert status == 429 and body["error"]["code"] == "too_many_taps"
    await wait_until(taps_closed, timeout=10)
    async with open_tap(gateway, tenant, "audit.events"):
        pass
    await wait_until(taps_closed, timeout=10)


async def test_heartbeat(gateway: Gateway, tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taps, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(taps, "TICK_SECONDS", 0.05)
    resp = await gateway.http.get(
        f"{gateway.url}/api/v1/taps/messages.sent", headers=tenant.headers()
    )
    try:
        assert resp.status == 200
        received = b""
        while b": keep-alive\n\n" not in received:
            received += await asyncio.wait_for(resp.content.readany(), 5.0)
        assert received.startswith(b": tap messages.sent\n\n")
    finally:
        resp.close()
    await wait_until(taps_closed, timeout=10)


async def test_stalled_client_is_disconnected(
    gateway: Gateway, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_until(taps_closed, timeout=10)
    channel = await create_channel(gateway, tenant, "sandbox", {})
    await send_sandbox(gateway, tenant, channel["id"], "one event to stall on")
    real_send = taps._send

    async def stalled(resp: Any, data: bytes) -> None:
        if data.startswith(b"id: "):  # a client that stopped reading: the write never ends
            await asyncio.wait_for(asyncio.sleep(60), 0.2)
        await real_send(resp, data)

    monkeypatch.setattr(taps, "_send", stalled)
    resp = await gateway.http.get(
        f"{gateway.url}/api/v1/taps/webhooks.raw",
        params={"from": "earliest"},
        headers=tenant.headers(),
    )
    try:
        assert resp.status == 200
        async with asyncio.timeout(10):
            with contextlib.suppress(aiohttp.ClientPayloadError):
                while await resp.content.readany():
                    pass
    finally:
        resp.close()
    await wait_until(taps_closed, timeout=10)


# --- the slow-client guards, with stand-ins for the consumer and the connection -------------


def _record(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(
        "usage.events", 0, offset, 1_700_000_000_000, 0, b"k", value, None, 1, len(value), ()
    )


class EndlessConsumer:
    """A consumer with an endless backlog of one workspace's records."""

    def __init__(self, workspace_id: str) -> None:
        self.value = json.dumps({"workspace_id": workspace_id}).encode()
        self.offset = 0

    async def getmany(self, **_: Any) -> dict[Any, list[ConsumerRecord]]:
        await asyncio.sleep(0)
        self.offset += 1
        return {"tp": [_record(self.offset, self.value)]}


async def test_pump_gives_up_on_a_full_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taps, "PUT_TIMEOUT", 0.05)
    ws = uuid.uuid4()
    queue: asyncio.Queue[bytes] = asyncio.Queue(3)
    why = await asyncio.wait_for(
        taps.pump(EndlessConsumer(str(ws)), queue, taps.selector("usage.events", ws)), 5
    )
    assert why == "slow_client" and queue.full()
    # Another workspace's records never take room in the queue.
    queue = asyncio.Queue(3)
    task = asyncio.create_task(
        taps.pump(EndlessConsumer(str(ws)), queue, taps.selector("usage.events", uuid.uuid4()))
    )
    await asyncio.sleep(0.2)
    assert queue.empty() and not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class FakeResponse:
    """A connection whose writes take ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        await asyncio.sleep(self.delay)
        self.written.append(data)


def _request() -> Any:
    return SimpleNamespace(transport=SimpleNamespace(is_closing=lambda: False))


async def test_dropped_client_gets_a_final_error_event() -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue(2)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("slow_client")
    resp = FakeResponse()
    await asyncio.wait_for(taps.stream(_request(), resp, queue, done), 5)  # type: ignore[arg-type]
    assert resp.written[-1].startswith(b"event: error\ndata: ")
    assert json.loads(resp.written[-1].split(b"data: ", 1)[1])["code"] == "slow_client"


async def test_stalled_client_write_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taps, "WRITE_TIMEOUT", 0.1)
    queue: asyncio.Queue[bytes] = asyncio.Queue(2)
    queue.put_nowait(b"event: x\ndata: {}\n\n")
    forever = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            taps.stream(_request(), FakeResponse(delay=60), queue, forever),  # type: ignore[arg-type]
            5,
        )
    forever.cancel()


def test_parse_from() -> None:
    assert taps.parse_from(None).kind == "now"
    assert taps.parse_from("earliest").kind == "earliest"
    assert taps.parse_from("42") == taps.StartAt("offset", offset=42)
    at = taps.parse_from("2024-05-01T12:00:00+00:00")
    assert (
        at
        == taps.parse_from("2024-05-01T12:00:00 00:00")
        == taps.parse_from("2024-05-01T12:00:00Z")
    )
    assert at.time_ms == 1714564800000
    assert taps.parse_from("2024-05-01T12:00:00").time_ms == at.time_ms, "naive means UTC"


# --- omnichat tap ----------------------------------------------------------------------------


async def test_cli_tap_prints_events(gateway: Gateway, tenant: Tenant) -> None:
    channel = await create_channel(gateway, tenant, "sandbox", {})
    text = f"cli {uuid.uuid4()}"
    await send_sandbox(gateway, tenant, channel["id"], text)
    env = {
        **os.environ,
        "OMNICHAT_URL": gateway.url,
        "OMNICHAT_WORKSPACE_ID": tenant.id,
        "OMNICHAT_API_KEY": tenant.key,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnichat.cli",
        "tap",
        "webhooks.raw",
        "--from",
        "earliest",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            while not any(text in line["value"] for line in lines):
                raw = await proc.stdout.readline()
                assert raw, (await proc.stderr.read()).decode()
                lines.append(json.loads(raw))
        await asyncio.sleep(1.0)  # it keeps running, waiting for more
        assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert all(line["headers"]["workspace_id"] == tenant.id for line in lines)
    assert set(lines[0]) == {"partition", "offset", "timestamp", "key", "headers", "value"}
    await wait_until(taps_closed, timeout=10)


async def test_cli_tap_reports_a_refusal(gateway: Gateway, tenant: Tenant) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omnichat.cli",
        "tap",
        "no.such.topic",
        "--url",
        gateway.url,
        "--workspace",
        tenant.id,
        "--key",
        tenant.key,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and out == b""
    assert b"404" in err


# --- bounds: admin topics, taps per workspace, how far back ---------------------------------


async def test_raw_and_deadletter_taps_need_an_admin_key(gateway: Gateway, tenant: Tenant) -> None:
    status, key = await gateway.call(
        "POST",
        "/api/v1/auth/keys",
        key=tenant.key,
        workspace=tenant.id,
        json={"name": "reader", "scopes": ["read"]},
    )
    assert status == 201
    for topic in ("webhooks.raw", "deadletter"):
        status, body = await gateway.call(
            "GET", f"/api/v1/taps/{topic}", key=key["key"], workspace=tenant.id
        )
        assert status == 403, (topic, body)
        assert body["error"]["code"] == "insufficient_scope"
        assert body["error"]["details"] == {"topic": topic, "required_scope": "admin"}
    assert taps.active_taps() == 0, "refused before any consumer was made"
    async with open_tap(gateway, tenant, "messages.sent", key=key["key"]):
        pass  # other topics stay open to read keys
    async with open_tap(gateway, tenant, "webhooks.raw"):
        pass  # and the admin key reads the raw tap
    await wait_until(taps_closed, timeout=10)


async def test_taps_per_workspace_limit(
    gateway: Gateway, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.services import SERVICES

    await wait_until(taps_closed, timeout=10)
    monkeypatch.setattr(gateway.app[SERVICES].settings, "tap_max_open_per_workspace", 2)
    other = await make_tenant(gateway, "Tap limit other")
    async with open_tap(gateway, tenant, "audit.events"), open_tap(gateway, tenant, "usage.events"):
        status, body = await gateway.call(
            "GET", "/api/v1/taps/messages.sent", key=tenant.key, workspace=tenant.id
        )
        assert status == 429 and body["error"]["code"] == "too_many_taps", body
        assert body["error"]["details"] == {"limit": 2, "scope": "workspace"}
        async with open_tap(gateway, other, "audit.events"):
            assert taps.active_taps() == 3, "another workspace has its own count"
    await wait_until(taps_closed, timeout=10)
    async with open_tap(gateway, tenant, "messages.sent"):
        pass  # closed taps gave their places back


async def test_from_beyond_the_lookback_window(
    gateway: Gateway, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.services import SERVICES

    await wait_until(taps_closed, timeout=10)
    channel = await create_channel(gateway, tenant, "sandbox", {})
    old = f"soon old {uuid.uuid4()}"
    await send_sandbox(gateway, tenant, channel["id"], old)
    monkeypatch.setattr(gateway.app[SERVICES].settings, "tap_max_lookback_seconds", 2)
    await asyncio.sleep(2.5)  # every record on the topic is now older than the window
    long_ago = datetime.fromtimestamp(datetime.now(UTC).timestamp() - 10, UTC).isoformat()
    for start in ("earliest", "0", long_ago):
        status, body = await _tap_status(gateway, tenant, start)
        assert status == 400, (start, body)
        assert body["error"]["code"] == "from_beyond_lookback"
        assert body["error"]["details"] == {"name": "from", "max_lookback_seconds": 2}
    await wait_until(taps_closed, timeout=10)
    recent = datetime.fromtimestamp(datetime.now(UTC).timestamp() - 1, UTC).isoformat()
    fresh = f"fresh {uuid.uuid4()}"
    async with open_tap(gateway, tenant, "webhooks.raw", recent) as tap:
        await send_sandbox(gateway, tenant, channel["id"], fresh)
        await tap.until(lambda d: json.loads(d["value"])["text"] == fresh)
    assert all(old not in e.data for e in tap.seen), "a time after every record: the end"
    for start in ("now", "999999999999"):  # past the end: starts at the end
        async with open_tap(gateway, tenant, "webhooks.raw", start):
            pass
    await wait_until(taps_closed, timeout=10)


async def _tap_status(gw: Gateway, t: Tenant, start: str) -> tuple[int, Any]:
    """The status of a tap request and its error body (None for a tap that opened)."""
    async with gw.http.get(
        f"{gw.url}/api/v1/taps/webhooks.raw", params={"from": start}, headers=t.headers()
    ) as resp:
        return resp.status, None if resp.status == 200 else await resp.json()


def test_check_lookback() -> None:
    now = 1_800_000_000_000
    taps.check_lookback(taps.StartAt("time", time_ms=now - 3_600_000), 3600, now)
    with pytest.raises(ApiError) as refused:
        taps.check_lookback(taps.StartAt("time", time_ms=now - 3_600_001), 3600, now)
    assert refused.value.status == 400 and refused.value.code == "from_beyond_lookback"
    assert refused.value.details == {"name": "from", "max_lookback_seconds": 3600}
    taps.check_lookback(taps.StartAt("time", time_ms=0), 0, now)  # 0: no window
    for start in (taps.StartAt("earliest"), taps.StartAt("offset", offset=0)):
        taps.check_lookback(start, 3600, now)  # checked against the records, later
