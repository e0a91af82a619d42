"""``omnichat tap``: watch a pipeline topic of one workspace from a terminal, one JSON per line.

It reads ``GET /api/v1/taps/{topic}`` (Server-Sent Events) and prints each
event's ``data`` to stdout, so the output pipes into ``jq`` or a file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from omnichat.settings import Settings

# Heartbeats come every 15 s; four missed mean the gateway or the network is gone.
READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event."""

    event: str
    data: str
    id: str | None = None


async def sse_events(content: aiohttp.StreamReader) -> AsyncIterator[SseEvent]:
    """Parse an SSE stream (events may be larger than aiohttp's line limit, so split by hand)."""
    buffer = b""
    event = "message"
    event_id: str | None = None
    data: list[str] = []
    async for chunk in content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if data:
                    yield SseEvent(event, "\n".join(data), event_id)
                event, event_id, data = "message", None, []
                continue
            if line.startswith(":"):
                continue  # a comment: the heartbeat
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                event_id = value


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``omnichat tap`` (its options default from the environment, like a client's)."""
    t = sub.add_parser("tap", help="print a topic's events of one workspace, one JSON per line")
    t.add_argument("topic", help="a pipeline topic, e.g. messages.normalized or webhooks.raw")
    t.add_argument(
        "--from",
        dest="start",
        metavar="FROM",
        default="now",
        help="now (default), earliest, an offset of every partition, or an ISO 8601 time",
    )
    t.add_argument(
        "--url", default=os.environ.get("OMNICHAT_URL"), help="gateway URL (env OMNICHAT_URL)"
    )
    t.add_argument(
        "--workspace",
        default=os.environ.get("OMNICHAT_WORKSPACE_ID"),
        help="workspace id (env OMNICHAT_WORKSPACE_ID)",
    )
    t.add_argument(
        "--key", default=os.environ.get("OMNICHAT_API_KEY"), help="API key (env OMNICHAT_API_KEY)"
    )
    t.set_defaults(func=cmd_tap)


def cmd_tap(settings: Settings, args: argparse.Namespace) -> int:
    """Run the tap until Ctrl-C (which is how it is meant to end: exit status 0)."""
    try:
        return asyncio.run(run_tap(settings, args))
    except KeyboardInterrupt:
        return 0


def tap_url(base: str, topic: str) -> str:
    """The tap endpoint of a topic."""
    return f"{base.rstrip('/')}/api/v1/taps/{topic}"


async def run_tap(settings: Settings, args: argparse.Namespace) -> int:
    """Print every event of the tap until interrupted; 1 when the gateway refuses or drops it."""
    base = args.url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    if not args.workspace or not args.key:
        print(
            "a workspace and an API key are needed "
            "(--workspace/--key or OMNICHAT_WORKSPACE_ID/OMNICHAT_API_KEY)",
            file=sys.stderr,
        )
        return 2
    headers = {
        "Authorization": f"Bearer {args.key}",
        "X-Workspace-ID": args.workspace,
        "Accept": "text/event-stream",
    }
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=READ_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(tap_url(base, args.topic), params={"from": args.start}, headers=headers) as resp,
    ):
        if resp.status != 200:
            print(f"tap refused: {resp.status} {await resp.text()}", file=sys.stderr)
            return 1
        print(f"tapping {args.topic} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        async for ev in sse_events(resp.content):
            if ev.event == "error":
                print(f"tap closed by the gateway: {ev.data}", file=sys.stderr)
                return 1
            print(ev.data, flush=True)  # already one JSON object on one line
    print("the gateway ended the tap", file=sys.stderr)
    return 1
