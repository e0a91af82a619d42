"""A local Evolution API v2 for tests: ``POST /message/sendText/{instance}`` over real HTTP.

The server binds 127.0.0.1 on a free port, records every request it gets and
answers from a script, then with Evolution's own success shape. Use it as::

    async with FakeEvolutionAPI(api_key="key") as fake:
        config = EvolutionConfig(base_url=fake.base_url, instance="shop", api_key="key", ...)
        fake.enqueue(500, evolution_error(500, "Connection Closed"))
        ...
        [request] = await fake.wait_for_requests(1)
        assert request.json == {"number": "5511999999999", "text": "Olá"}

Answers, in order of precedence:

1. a wrong or missing ``apikey`` header: 401 ``{"status": 401, "error": "Unauthorized", ...}``;
2. an instance other than the one given to the constructor (when one was
   given): 404; a body without string ``number`` and ``text`` (the v1
   ``textMessage`` shape, say): 400;
3. the next scripted answer (``enqueue``), in order, one per request;
4. the standing answer (``always``: a hanging provider, a 429 for good, a redirect);
5. the default: 201 shaped like ``evolution_send_text_response_docs.json``
   with a new unique ``key.id``.

Requests to any other path are recorded too and answered 404.

What a test reads: ``base_url``; ``requests`` (every ``RecordedRequest``, in
arrival order, rejected ones included); ``issued_ids`` (each key.id the default
answer gave out, not those of scripted bodies); ``sent_texts()``;
``pending_answers``; ``await wait_for_requests(n, timeout=5)``. ``on_accept`` (an async
callable given the request) runs after a send was accepted, before the answer leaves.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

DEFAULT_API_KEY = "test-evolution-api-key"


def evolution_error(status: int, message: Any) -> dict[str, Any]:
    """An Evolution error body shaped like ``evolution_error_500.json``, for scripted answers."""
    return {"status": status, "error": HTTPStatus(status).phrase, "response": {"message": message}}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (headers include the apikey, as sent)."""

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


class FakeEvolutionAPI:
    """Plays Evolution API v2's sendText endpoint on a real local port, scriptable per request."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, instance: str | None = None) -> None:
        self.api_key = api_key
        self.instance = instance
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
            raise RuntimeError(
                "FakeEvolutionAPI is not started; use `async with FakeEvolutionAPI()`"
            )
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
        """``(number, text)`` of every sendText request received, in order."""
        return [
            (str(r.json.get("number")), str(r.json.get("text")))
            for r in self.requests
            if isinstance(r.json, dict) and r.path.startswith("/message/sendText/")
        ]

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start answering."""
        app = web.Application()
        app.router.add_post("/message/sendText/{instance}", self._send_text)
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

    async def _send_text(self, request: web.Request) -> web.StreamResponse:
        """sendText: auth, validation, then the script, then the default answer."""
        recorded = await self._record(request)
        if request.headers.get("apikey") != self.api_key:
            return web.json_response(evolution_error(401, "Unauthorized"), status=401)
        instance = request.match_info["instance"]
        if self.instance is not None and instance != self.instance:
            message = [f'The "{instance}" instance does not exist']
            return web.json_response(evolution_error(404, message), status=404)
        payload = recorded.json
        missing = [
            name
            for name in ("number", "text")
            if not isinstance(payload, dict) or not isinstance(payload.get(name), str)
        ]
        if missing:
            message = [[f'instance requires property "{name}"' for name in missing]]
            return web.json_response(evolution_error(400, message), status=400)
        if self._script:
            return await self._scripted(self._script.popleft(), payload, recorded)
        if self._standing is not None:
            return await self._scripted(self._standing, payload, recorded)
        answer = self._default_answer(payload)
        if self.on_accept is not None:
            await self.on_accept(recorded)
        return web.json_response(answer, status=201)

    async def _unknown_path(self, request: web.Request) -> web.StreamResponse:
        """Any other path: recorded, then refused as Evolution does."""
        await self._record(request)
        message = [f"Cannot {request.method} {request.path}"]
        return web.json_response(evolution_error(404, message), status=404)

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
        """Evolution's sendText answer with a new Baileys-style id (``BAE5`` + 12 hex digits)."""
        number = payload["number"]
        remote_jid = number if "@" in number else re.sub(r"\D", "", number) + "@s.whatsapp.net"
        key_id = f"BAE5{next(self._counter):04X}{secrets.token_hex(4).upper()}"
        self.issued_ids.append(key_id)
        return {
            "key": {"remoteJid": remote_jid, "fromMe": True, "id": key_id},
            "message": {"extendedTextMessage": {"text": payload["text"]}},
            "messageTimestamp": str(int(time.time())),
            "status": "PENDING",
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
