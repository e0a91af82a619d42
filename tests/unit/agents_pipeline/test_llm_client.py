"""LLMClient against a real local OpenAI-compatible server: usage, retries, and give-ups."""

from __future__ import annotations

import math
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import openai
import pytest

from agents_pipeline.errors import LLMError
from agents_pipeline.llm import (
    Completion,
    LLMClient,
    count_message_tokens,
    count_tokens,
    parse_retry_after,
)
from tests.fakes.openai_api import FakeOpenAI, chat_completion_body, openai_error

API_KEY = "sk-test"
MESSAGES = [
    {"role": "system", "content": "Você é um assistente.\n\n[1] Horários\nAbrimos às 7h."},
    {"role": "user", "content": "Que horas vocês abrem?"},
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """A fresh fake endpoint per test, so scripts and recorded requests never leak."""
    async with FakeOpenAI(api_key=API_KEY) as server:
        yield server


def make_client(
    base_url: str, *, api_key: str = API_KEY, timeout: float = 2.0, max_retries: int = 3
) -> LLMClient:
    """A client with tiny backoff so retry tests stay fast."""
    return LLMClient(
        base_url=base_url,
        api_key=api_key,
        timeout=timeout,
        max_retries=max_retries,
        backoff_base=0.001,
        backoff_max=0.005,
    )


async def complete(llm: LLMClient, model: str = "gpt-4o-mini") -> Completion:
    """One call with the shared test messages."""
    return await llm.complete(model=model, messages=MESSAGES, temperature=0.2, max_tokens=200)


async def test_success_reports_usage_and_sends_openai_request(fake: FakeOpenAI) -> None:
    async with make_client(fake.base_url) as llm:
        result = await complete(llm)
    assert result.text == "Resposta simulada para: Que horas vocês abrem? [1]"
    assert result.prompt_tokens == count_message_tokens(MESSAGES)
    assert result.completion_tokens == count_tokens(result.text)
    assert result.model == "gpt-4o-mini"
    assert result.finish_reason == "stop"
    assert result.attempts == 1
    assert result.latency_ms >= 0
    [request] = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.json["model"] == "gpt-4o-mini"
    assert request.json["messages"] == MESSAGES
    assert request.json["temperature"] == 0.2
    assert request.json["max_tokens"] == 200


async def test_usage_comes_from_the_response_when_present(fake: FakeOpenAI) -> None:
    fake.enqueue(
        200, chat_completion_body("Abrimos às 7h [1].", prompt_tokens=123, completion_tokens=7)
    )
    async with make_client(fake.base_url) as llm:
        result = await complete(llm)
    assert (result.prompt_tokens, result.completion_tokens) == (123, 7)


async def test_missing_usage_falls_back_to_our_count(fake: FakeOpenAI) -> None:
    body = chat_completion_body("Abrimos às 7h [1].", model="llama3", prompt_tokens=None)
    assert "usage" not in body
    fake.enqueue(200, body)
    async with make_client(fake.base_url) as llm:
        result = await complete(llm, model="llama3")
    assert result.prompt_tokens == count_message_tokens(MESSAGES)
    assert result.completion_tokens == count_tokens("Abrimos às 7h [1].")
    assert result.model == "llama3"


async def test_429_is_retried_after_retry_after(fake: FakeOpenAI) -> None:
    fake.enqueue(429, headers={"Retry-After": "0.05"})
    async with make_client(fake.base_url) as llm:
        result = await complete(llm)
    first, second = fake.requests
    assert result.attempts == 2
    assert second.received_at - first.received_at >= 0.045
    assert fake.pending_answers == 0


async def test_5xx_until_exhausted_raises_retriable_llm_error(fake: FakeOpenAI) -> None:
    for _ in range(3):
        fake.enqueue(500)
    async with make_client(fake.base_url, max_retries=2) as llm:
        with pytest.raises(LLMError) as caught:
            await complete(llm)
    assert len(fake.requests) == 3
    assert caught.value.code == "http_500"
    assert caught.value.retriable is True
    assert "after 3 attempts" in caught.value.message


async def test_5xx_then_success_within_retries(fake: FakeOpenAI) -> None:
    fake.enqueue(502)
    fake.enqueue(503)
    async with make_client(fake.base_url, max_retries=2) as llm:
        result = await complete(llm)
    assert result.attempts == 3
    assert len(fake.requests) == 3


async def test_400_fails_at_once_without_retry(fake: FakeOpenAI) -> None:
    fake.enqueue(400, openai_error("Invalid 'max_tokens'", param="max_tokens"))
    async with make_client(fake.base_url) as llm:
        with pytest.raises(LLMError) as caught:
            await complete(llm)
    assert len(fake.requests) == 1
    assert caught.value.code == "http_400"
    assert caught.value.retriable is False
    assert "Invalid 'max_tokens'" in caught.value.message
    assert LLMError.retriable is True  # the class default is untouched


async def test_wrong_key_is_a_non_retriable_401(fake: FakeOpenAI) -> None:
    async with make_client(fake.base_url, api_key="sk-wrong") as llm:
        with pytest.raises(LLMError) as caught:
            await complete(llm)
    assert caught.value.code == "http_401"
    assert caught.value.retriable is False
    assert len(fake.requests) == 1


async def test_timeout_is_retried(fake: FakeOpenAI) -> None:
    fake.enqueue(200, delay=3.0)
    async with make_client(fake.base_url, timeout=0.5) as llm:
        result = await complete(llm)
    assert result.attempts == 2
    assert len(fake.requests) == 2


async def test_timeouts_until_exhausted(fake: FakeOpenAI) -> None:
    fake.enqueue(200, delay=3.0)
    fake.enqueue(200, delay=3.0)
    async with make_client(fake.base_url, timeout=0.3, max_retries=1) as llm:
        with pytest.raises(LLMError) as caught:
            await complete(llm)
    assert caught.value.code == "timeout"
    assert caught.value.retriable is True


async def test_connection_refused_is_retried_then_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with make_client(f"http://127.0.0.1:{port}/v1", max_retries=1) as llm:
        with pytest.raises(LLMError) as caught:
            await complete(llm)
    assert caught.value.code == "connection_error"
    assert caught.value.retriable is True


async def test_unreadable_response_is_not_retried(fake: FakeOpenAI) -> None:
    fake.enqueue(200, {"id": "x", "object": "chat.completion", "choices": []})
    async with make_client(fake.base_url) as llm:
        with pytest.raises(LLMError) as caught:
            await complete(llm)
    assert caught.value.code == "invalid_response"
    assert caught.value.retriable is False
    assert len(fake.requests) == 1


async def test_backoff_grows_with_jitter_and_is_capped() -> None:
    async with LLMClient(
        base_url="http://127.0.0.1:9/v1",
        api_key=API_KEY,
        backoff_base=1.0,
        backoff_max=4.0,
        retry_after_max=30.0,
        rng=random.Random(7),
    ) as llm:
        for retry, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)]:
            delay = llm.retry.delay(retry)
            assert ceiling / 2 <= delay <= ceiling
        assert llm.retry.delay(0, retry_after=2.5) == 2.5
        assert llm.retry.delay(0, retry_after=1000.0) == 30.0


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = parse_retry_after({"retry-after": when})
    assert parsed is not None and 25 <= parsed <= 30


# --- the fake itself: it is reused by end-to-end tests, so its contract is pinned here ------


async def test_fake_embeddings_work_with_the_sdk_defaults(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
    try:
        # The SDK asks for base64 unless told otherwise; the fake speaks both encodings.
        packed = await client.embeddings.create(
            model="text-embedding-3-small",
            input=["Horário de funcionamento", "horario de FUNCIONAMENTO!", "Taxa de entrega"],
        )
        plain = await client.embeddings.create(
            model="text-embedding-3-small",
            input="Horário de funcionamento",
            encoding_format="float",
        )
        small = await client.embeddings.create(model="m", input="abc", dimensions=16)
    finally:
        await client.close()
    same, alike, other = (d.embedding for d in packed.data)
    assert len(same) == 384
    assert math.isclose(math.fsum(v * v for v in same), 1.0, rel_tol=1e-5)
    assert same == pytest.approx(plain.data[0].embedding, abs=1e-6)
    assert same == pytest.approx(alike, abs=1e-6)  # case and accents fold away
    assert math.fsum(a * b for a, b in zip(same, other, strict=True)) < 0.9
    assert len(small.data[0].embedding) == 16
    assert packed.usage.prompt_tokens > 0
    assert fake.embedding_requests[0].json["encoding_format"] == "base64"


async def test_fake_rejects_a_wrong_key_in_openai_error_shape(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-nope", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.embeddings.create(model="m", input="x")
    finally:
        await client.close()
    assert caught.value.status_code == 401
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "invalid_api_key"
    [request] = await fake.wait_for_requests(1, timeout=1.0)
    assert request.headers["Authorization"] == "Bearer sk-nope"


async def test_fake_scripts_can_target_one_endpoint(fake: FakeOpenAI) -> None:
    fake.enqueue(503, endpoint="chat")
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
    try:
        await client.embeddings.create(model="m", input="unaffected")
        assert fake.pending_answers == 1
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "oi"}]
            )
    finally:
        await client.close()
    assert fake.pending_answers == 0
    assert [r.path for r in fake.requests] == ["/v1/embeddings", "/v1/chat/completions"]


async def test_fake_cuts_at_max_tokens_like_the_api(fake: FakeOpenAI) -> None:
    async with make_client(fake.base_url) as llm:
        result = await llm.complete(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0.0, max_tokens=3
        )
    assert result.finish_reason == "length"
    assert result.completion_tokens == 3


async def test_wait_for_requests_times_out_with_what_it_saw(fake: FakeOpenAI) -> None:
    with pytest.raises(TimeoutError, match="expected 1 requests"):
        await fake.wait_for_requests(1, timeout=0.05)
