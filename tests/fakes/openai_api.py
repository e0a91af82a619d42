"""A local OpenAI-compatible API for tests: chat completions and embeddings over real HTTP.

The server binds 127.0.0.1 on a free port, records every request and answers from
a script, then with deterministic defaults in OpenAI's wire format. Use it as::

    async with FakeOpenAI(api_key="sk-test") as fake:
        llm = LLMClient(base_url=fake.base_url, api_key="sk-test")
        fake.enqueue(429, headers={"Retry-After": "0.05"})
        ...
        [first, second] = await fake.wait_for_requests(2)
        assert second.json["model"] == "gpt-4o-mini"

Answers, in order of precedence:

1. a wrong or missing ``Authorization: Bearer <api_key>``: 401 ``invalid_api_key``;
2. a body without the required fields (``model`` + ``messages``, ``model`` + ``input``): 400;
3. the next scripted answer (``enqueue``) meant for that endpoint, in order;
4. the default: a chat completion that echoes the user's message and cites ``[1]``
   when the system message carries numbered sources (``[1] Title``), with a real
   ``usage`` block counted by tiktoken; or embeddings from feature-hashed words, so
   texts sharing words get close vectors (deterministic, L2-normalised).

Other paths are recorded and answered 404 in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import re
import struct
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from agents_pipeline.llm.tokens import count_message_tokens, count_tokens, truncate_to_tokens

DEFAULT_API_KEY = "sk-test"
DEFAULT_EMBEDDING_DIM = 384
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

Endpoint = Literal["chat", "embeddings"]
_PATHS: dict[Endpoint, str] = {"chat": CHAT_PATH, "embeddings": EMBEDDINGS_PATH}
_SOURCE_LINE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)
_WORD = re.compile(r"\w+")

_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def openai_error(
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """An error body in OpenAI's shape, for scripted answers."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _default_error(status: int) -> dict[str, Any]:
    """The error body OpenAI sends for ``status`` when a test scripts no body."""
    error_type, code = _ERROR_TYPES.get(status, ("server_error", None))
    if status == 429:
        message = "Rate limit reached for requests. Please try again in 1s."
    elif status >= 500:
        message = "The server had an error while processing your request. Sorry about that!"
    else:
        message = f"Request failed with status {status}."
    return openai_error(message, error_type=error_type, code=code)


def chat_completion_body(
    text: str,
    *,
    model: str = "gpt-4o-mini",
    prompt_tokens: int | None = 10,
    completion_tokens: int | None = None,
    finish_reason: str = "stop",
    completion_id: str = "chatcmpl-fake",
) -> dict[str, Any]:
    """A chat completion body; ``prompt_tokens=None`` leaves ``usage`` out entirely."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if prompt_tokens is not None:
        completion = count_tokens(text) if completion_tokens is None else completion_tokens
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
    return body


def _fold(text: str) -> str:
    """Lower-case, accent-free text, so "Horário" and "horario" hash alike."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def fake_embedding(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector: feature-hashed words (the whole text when it has none)."""
    vector = [0.0] * dim
    features = _WORD.findall(_fold(text)) or [text]
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "big") % dim
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:  # words cancelled out: fall back to one hashed axis
        digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "big") % dim] = 1.0
        return vector
    return [v / norm for v in vector]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (headers include the key, as sent)."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any  # parsed body; None when it was empty or not JSON
    received_at: float  # time.monotonic() on arrival, to check backoff delays


@dataclass(frozen=True)
class ScriptedAnswer:
    """An answer queued by a test: ``body`` None means the default answer for the status."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    endpoint: Endpoint | None = None


class FakeOpenAI:
    """Plays an OpenAI-compatible endpoint on a real local port, scriptable per request."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        reply: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.embedding_dim = embedding_dim
        self.reply = reply or default_reply
        self.requests: list[RecordedRequest] = []
        self._script: deque[ScriptedAnswer] = deque()
        self._arrived = asyncio.Event()
        self._closing = asyncio.Event()
        self._counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what goes in the OpenAI client's ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("FakeOpenAI is not started; use `async with FakeOpenAI()`")
        return self._base_url

    @property
    def pending_answers(self) -> int:
        """Scripted answers not consumed yet (assert 0 to prove every one was used)."""
        return len(self._script)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat completion requests received, in order."""
        return [r for r in self.requests if r.path == CHAT_PATH]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        """The embedding requests received, in order."""
        return [r for r in self.requests if r.path == EMBEDDINGS_PATH]

    def enqueue(
        self,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        delay: float = 0.0,
        endpoint: Endpoint | None = None,
    ) -> None:
        """Queue the answer for the next authenticated request (to ``endpoint``, if given).

        ``body`` is JSON-encoded unless it is ``str`` (sent as text/plain) or
        ``bytes``; None gives the default answer for a 2xx and OpenAI's error
        shape otherwise. ``delay`` seconds pass before the answer (to test timeouts).
        """
        self._script.append(ScriptedAnswer(status, body, dict(headers or {}), delay, endpoint))

    async def wait_for_requests(
        self,
        n: int,
        timeout: float = 5.0,
    ) -> list[RecordedRequest]:
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

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port and start answering."""
        app = web.Application()
        app.router.add_post(CHAT_PATH, self._chat)
        app.router.add_post(EMBEDDINGS_PATH, self._embeddings)
        app.router.add_route("*", "/{tail:.*}", self._unknown_path)
        # handler_cancellation: a client that times out cancels its (delayed) handler.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._base_url = f"http://127.0.0.1:{port}/v1"

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

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions`` (non-streaming)."""
        payload, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        messages = payload.get("messages")
        if not isinstance(payload.get("model"), str) or not isinstance(messages, list):
            return self._bad_request("'model' and 'messages' are required properties.")
        if not messages:
            return self._bad_request("'messages' must contain at least one message.", "messages")
        if payload.get("stream"):
            return self._bad_request("This fake does not stream.", "stream")
        return await self._answer("chat", payload, self._default_chat)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings`` (float or base64 encoding)."""
        payload, refusal = await self._admit(request)
        if refusal is not None:
            return refusal
        inputs = payload.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(payload.get("model"), str) or not (
            isinstance(inputs, list) and inputs and all(isinstance(i, str) for i in inputs)
        ):
            return self._bad_request("'model' and 'input' (text or list of texts) are required.")
        return await self._answer("embeddings", payload, self._default_embeddings)

    async def _unknown_path(self, request: web.Request) -> web.StreamResponse:
        """Any other path: recorded, then refused as OpenAI does."""
        await self._record(request)
        message = f"Invalid URL ({request.method} {request.path})"
        return web.json_response(openai_error(message), status=404)

    async def _admit(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        """Record the request, then check the key and that the body is a JSON object."""
        recorded = await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {sent[:6]}****. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            body = openai_error(message, code="invalid_api_key")
            return {}, web.json_response(body, status=401)
        if not isinstance(recorded.json, dict):
            return {}, self._bad_request("We could not parse the JSON body of your request.")
        return recorded.json, None

    @staticmethod
    def _bad_request(message: str, param: str | None = None) -> web.Response:
        """A 400 in OpenAI's error shape."""
        return web.json_response(openai_error(message, param=param), status=400)

    def _next_scripted(self, endpoint: Endpoint) -> ScriptedAnswer | None:
        """Pop the first scripted answer meant for ``endpoint`` (or for any endpoint)."""
        for answer in self._script:
            if answer.endpoint in (None, endpoint):
                self._script.remove(answer)
                return answer
        return None

    async def _answer(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any],
        default: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> web.Response:
        """Play the next scripted answer for ``endpoint``, or the default one."""
        answer = self._next_scripted(endpoint)
        if answer is None:
            return web.json_response(default(payload))
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
            body = default(payload) if 200 <= answer.status < 300 else _default_error(answer.status)
        return web.json_response(body, status=answer.status, headers=headers)

    def _default_chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A deterministic completion with usage, cut at ``max_tokens`` like the real API."""
        text = self.reply(payload)
        finish_reason = "stop"
        limit = payload.get("max_tokens") or payload.get("max_completion_tokens")
        if isinstance(limit, int) and count_tokens(text) > limit:
            text, finish_reason = truncate_to_tokens(text, limit), "length"
        return chat_completion_body(
            text,
            model=payload["model"],
            prompt_tokens=count_message_tokens(payload["messages"]),
            finish_reason=finish_reason,
            completion_id=f"chatcmpl-fake{next(self._counter)}",
        )

    def _default_embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Deterministic embeddings, in the encoding the client asked for."""
        inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        dim = payload.get("dimensions") or self.embedding_dim
        base64_wanted = payload.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = fake_embedding(text, dim)
            encoded: Any = vector
            if base64_wanted:
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(count_tokens(text) for text in inputs)
        return {
            "object": "list",
            "data": data,
            "model": payload["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
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
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=parsed,
            received_at=time.monotonic(),
        )
        self.requests.append(recorded)
        self._arrived.set()
        return recorded


def _message_text(message: Any) -> str:
    """The text of one chat message (plain content or text parts)."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def default_reply(payload: dict[str, Any]) -> str:
    """Echo the last user message; cite [1] when the system message numbers sources."""
    messages = payload.get("messages") or []
    system = " ".join(
        _message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == "system"
    )
    users = [_message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    question = " ".join((users[-1] if users else "").split())[:200]
    if _SOURCE_LINE.search(system):
        return f"Resposta simulada para: {question} [1]"
    return f"Resposta simulada para: {question}"
