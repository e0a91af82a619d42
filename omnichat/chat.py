"""``omnichat chat``: talk to an agent through the whole pipeline from a terminal.

Each line typed goes to the sandbox webhook of a channel, exactly as a provider's
message would (gateway → broker → every stage); the answer is read back from the
conversation API once the send stage stored it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import aiohttp

from omnichat.settings import Settings

REPLY_TIMEOUT = 60.0


class ChatError(Exception):
    """The gateway refused a call."""


class ChatSession:
    """A terminal contact talking to one sandbox channel."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base: str,
        *,
        workspace: str,
        key: str,
        channel: str,
        contact: str,
    ) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}", "X-Workspace-ID": workspace}
        self.channel = channel
        self.contact = contact
        self.conversation: str | None = None

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        async with self.http.request(method, self.base + path, headers=self.headers, **kw) as r:
            body = await r.json(content_type=None)
            if r.status >= 400:
                err = (body or {}).get("error", {})
                raise ChatError(f"{r.status} {err.get('code')}: {err.get('message')}")
            return body

    async def say(self, text: str) -> str:
        """Send one message and wait for the agent's answer to it."""
        message_id = f"chat-{uuid.uuid4()}"
        await self._call(
            "POST",
            f"/api/v1/webhooks/sandbox/{self.channel}",
            json={"from": self.contact, "text": text, "message_id": message_id},
        )
        deadline = asyncio.get_running_loop().time() + REPLY_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            answer = await self._find_reply(message_id)
            if answer is not None:
                return answer
            await asyncio.sleep(0.2)
        raise ChatError(
            "no answer within a minute (is a worker running, and is an agent with "
            "a published version bound to the channel?)"
        )

    async def _find_reply(self, message_id: str) -> str | None:
        if self.conversation is None:
            page = await self._call(
                "GET", f"/api/v1/conversations/?channel_id={self.channel}&limit=200"
            )
            for conv in page["items"]:
                if conv["contact"]["external_id"] == self.contact and conv["status"] == "open":
                    self.conversation = conv["id"]
            if self.conversation is None:
                return None
        cursor: str | None = None
        inbound: str | None = None
        while True:
            path = f"/api/v1/conversations/{self.conversation}/messages?limit=200"
            page = await self._call("GET", path + (f"&cursor={cursor}" if cursor else ""))
            for m in page["items"]:
                if m["direction"] == "in" and m["provider_message_id"] == message_id:
                    inbound = m["id"]
                elif inbound and m["direction"] == "out" and m.get("in_reply_to") == inbound:
                    if m["status"] in ("sent", "delivered", "read"):
                        return str(m["text"])
                    if m["status"] in ("failed", "blocked"):
                        return f"[{m['status']}: {m.get('error_code')}]"
            cursor = page["next_cursor"]
            if cursor is None:
                return None


async def run_chat(settings: Settings, args: argparse.Namespace) -> int:
    """Read lines from stdin until EOF; print each answer."""
    base = args.url or f"http://{settings.gateway_host}:{settings.gateway_port}"
    async with aiohttp.ClientSession() as http:
        chat = ChatSession(
            http,
            base,
            workspace=args.workspace,
            key=args.key,
            channel=args.channel,
            contact=args.contact,
        )
        print("Omnichat chat — type a message, Ctrl-D to leave.", file=sys.stderr)
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return 0
            text = line.strip()
            if not text:
                continue
            try:
                print(f"agente> {await chat.say(text)}", flush=True)
            except ChatError as exc:
                print(f"erro> {exc}", file=sys.stderr, flush=True)
