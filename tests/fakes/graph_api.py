"""A local Meta Graph API for tests: ``POST /{version}/{phone_number_id}/messages`` over real HTTP.

The server binds 127.0.0.1 on a free port, records every request it gets and
answers from a script, then with Meta's own success shapes. Use it as::

    async with FakeGraphAPI(access_token="token") as fake:
        config = WhatsAppCloudConfig(..., access_token="token", base_url=fake.base_url)
        fake.enqueue(400, graph_error(131047, "Re-engagement message"))
        ...
        [request] = await fake.wait_for_requests(1)
        assert request.json["text"]["body"] == "Olá"

Answers, in order of precedence:

1. a wrong or missing ``Authorization: Bearer <access_token>``: 401 with code 190;
2. a ``phone_number_id`` other than the one given to the constructor (when one
   was given), or a body without ``messaging_product: whatsapp``: 400 with code 100;
3. the next scripted answer (``enqueue``), in order, one per request;
4. the standing answer (``always``: a hanging provider, a 429 for good, a redirect);
5. the default: a send answer shaped like ``cloud_send_text_response.json``
   with a new unique wamid, or ``{"success": true}`` for a read receipt.

Requests to any other path are recorded too and answered 400 (unknown path).

What a test reads: ``base_url``; ``requests`` (every ``RecordedRequest``, in
arrival order, rejected ones included); ``issued_ids`` (each wamid the default
answer gave out, not those of scripted bodies); ``sent_texts()``;
``pending_answers``; ``await wait_for_requests(n, timeout=5)``. ``on_accept`` (an async
callable given the request) runs after a send was accepted, before the answer leaves.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

DEFAULT_ACCESS_TOKEN = "test-graph-access-token"


def graph_error(
    code: int,
    message: str,
    *,
    details: str | None = None,
    error_type: str = "OAuthException",
    subcode: int | None = None,
) -> dict[str, Any]:
    """A Graph error body shaped like ``cloud_error_130429.json``, for scripted answers."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = secrets.token_urlsafe(16)
    return {"error": error}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (headers include the credential, as sent)."""

    method: str
    path: str
    path_params: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any  # parsed body; None when it was empty or not JSON


@dataclass(frozen=True)
class ScriptedAnswer:
    """An answer queued by a test: ``body`` None means the default answer for a 2xx."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeGraphAPI:
    """Plays Meta's Graph API messages edge on a real local port, scriptable per request."""

    def __init__(
        self, *, access_token: str = DEFAULT_ACCESS_TOKEN, phone_number_id: str | None = None
    ) -> None:
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.requests: list[RecordedRequest] = []
        self.issued_ids: list[str] = []
        self._script: deque[ScriptedAnswer] = deque()
        self._standing: ScriptedAnswer | None = None
        # Awaited after a send was accepted, before the answer goes out (tests use it to
        # break the database right between the provider's acceptance and its recording).
        self.on_accept: Callable[[RecordedRequest], Awaitable[None]] | None = None
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: what goes in the channel config's ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("FakeGraphAPI is not started; use `async with FakeGraphAPI()`")
        return self._base_url

    @property
    def pending_answers(self) -> int:
        """Scripted answers not consumed yet (assert 0 to prove every one was used)."""
        return len(self._script)

    def enqueue(
        self,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Queue the answer for the next authenticated request.

        ``body`` is JSON-encoded unless it is ``str`` (sent as text/plain) or
        ``bytes``; None gives the default answer for a 2xx and an empty body
        otherwise. ``delay`` seconds pass before the answer (to test timeouts).
        """
        self._script.append(ScriptedAnswer(status, body, dict(headers or {}), delay))

    def always(
        self,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Answer every authenticated request this way once the script is used up (a
        provider that hangs: ``always(200, delay=3600)``); ``clear_always`` ends it."""
        self._standing = ScriptedAnswer(status, body, dict(headers or {}), delay)

    def clear_always(self) -> None:
        """Back to the default answers."""
        self._standing = None

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests arrived and return the first ``n``."""

        async def arrived() -> None:
            while len(self.requests) < n:
                self._arrived.clear()
                await self._arrived.wait()

        try:
            await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            seen = [f"{r.method} {r.path}" for r in self.requests]
            raise TimeoutError(
                f"expected {n} requests within {timeout}s, got {len(seen)}: {seen}"
            ) from None
        return self.requests[:n]

    def sent_texts(self) -> list[tuple[str, str]]:
        """``(to, body)`` of every text send request received, in order."""
        return [
            (str(r.json.get("to")), str((r.json.get("text") or {}).get("body")))
            for r in self.requests
            if isinstance(r.json, dict) and r.json.get("type") == "text"
        ]

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start answering."""
        app = web.Application()
        app.router.add_post("/{version}/{phone_number_id}/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._unknown_path)
        # handler_cancellation: a client that times out cancels its (delayed) handler.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        """Stop the server, cutting short any delayed answer."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """The messages edge: auth, validation, then the script, then the default answer."""
        recorded = await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            message = "Invalid OAuth access token - Cannot parse access token"
            challenge = f'OAuth "Facebook Platform" "invalid_token" "{message}"'
            return web.json_response(
                graph_error(190, message), status=401, headers={"WWW-Authenticate": challenge}
            )
        phone_number_id = request.match_info["phone_number_id"]
        if self.phone_number_id is not None and phone_number_id != self.phone_number_id:
            message = (
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation."
            )
            return web.json_response(
                graph_error(100, message, error_type="GraphMethodException", subcode=33), status=400
            )
        payload = recorded.json
        if not isinstance(payload, dict) or payload.get("messaging_product") != "whatsapp":
            message = "(#100) The parameter messaging_product is required."
            return web.json_response(graph_error(100, message), status=400)
        if self._script:
            return await self._scripted(self._script.popleft(), payload, recorded)
        if self._standing is not None:
            return await self._scripted(self._standing, payload, recorded)
        answer = self._default_answer(payload)
        if self.on_accept is not None:
            await self.on_accept(recorded)
        return web.json_response(answer)

    async def _unknown_path(self, request: web.Request) -> web.StreamResponse:
        """Any other path: recorded, then refused as Graph does."""
        await self._record(request)
        message = f"Unknown path components: {request.path}"
        return web.json_response(graph_error(2500, message), status=400)

    async def _scripted(
        self, answer: ScriptedAnswer, payload: dict[str, Any], recorded: RecordedRequest
    ) -> web.Response:
        """Play one scripted answer, after its delay (cut short when the fake closes)."""
        if answer.delay:
            try:
                await asyncio.wait_for(self._closing.wait(), answer.delay)
            except TimeoutError:
                pass
        headers = dict(answer.headers)
        if isinstance(answer.body, bytes):
            return web.Response(status=answer.status, body=answer.body, headers=headers)
        if isinstance(answer.body, str):
            return web.Response(status=answer.status, text=answer.body, headers=headers)
        body = answer.body
        if body is None:
            if not 200 <= answer.status < 300:
                return web.Response(status=answer.status, headers=headers)
            body = self._default_answer(payload)
            if self.on_accept is not None:
                await self.on_accept(recorded)
        return web.json_response(body, status=answer.status, headers=headers)

    def _default_answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Meta's success answer: ``{"success": true}`` for a read receipt, else a new wamid."""
        if payload.get("status") == "read":
            return {"success": True}
        to = str(payload.get("to", ""))
        wa_id = re.sub(r"\D", "", to)
        serial = next(self._counter)
        raw_id = f"{wa_id}:{serial}:{secrets.token_hex(8).upper()}".encode()
        wamid = "wamid." + base64.b64encode(raw_id).decode().rstrip("=")
        self.issued_ids.append(wamid)
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [{"id": wamid}],
        }

    async def _record(self, request: web.Request) -> RecordedRequest:
        """Read and keep the request, then wake whoever waits for it."""
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            path_params=dict(request.match_info),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=parsed,
        )
        self.requests.append(recorded)
        self._arrived.set()
        return recorded
