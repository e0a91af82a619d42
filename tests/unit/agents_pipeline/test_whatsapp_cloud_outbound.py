"""WhatsApp Cloud outbound against a real local Graph API: what goes out, and how failures map."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import traceback
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents_pipeline.errors import ProviderError
from agents_pipeline.providers.configs import WhatsAppCloudConfig
from agents_pipeline.providers.http import parse_retry_after
from agents_pipeline.providers.whatsapp_cloud.outbound import mark_read, send_text
from tests.fakes.graph_api import FakeGraphAPI, graph_error

FIXTURES = Path(os.environ.get("OMNICHAT_FIXTURES", "/work/shared/fixtures")) / "providers"
TOKEN = "EAAGm0PX4ZCpsBAtest-secret-token-do-not-leak"
PHONE_ID = "106540352242922"
TO = "+5511987654321"


def fixture(name: str) -> dict[str, Any]:
    """Load a provider fixture as it is, so the tests follow the documented shapes."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def make_config(base_url: str, *, token: str = TOKEN) -> WhatsAppCloudConfig:
    """A channel config pointing at the fake (or at nothing)."""
    return WhatsAppCloudConfig(
        phone_number_id=PHONE_ID,
        access_token=token,
        app_secret="app-secret",
        verify_token="verify-token",
        base_url=base_url,
    )


def closed_port_url() -> str:
    """A local URL where nothing listens, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def full_text(exc: BaseException) -> str:
    """Everything a logger would print for the exception, causes included."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraphAPI]:
    async with FakeGraphAPI(access_token=TOKEN, phone_number_id=PHONE_ID) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def config(fake: FakeGraphAPI) -> WhatsAppCloudConfig:
    return make_config(fake.base_url)


async def send_error(
    session: aiohttp.ClientSession, config: WhatsAppCloudConfig, **kwargs: Any
) -> ProviderError:
    """Send and return the ProviderError the call must raise."""
    with pytest.raises(ProviderError) as info:
        await send_text(session, config, to=TO, text="Olá", **kwargs)
    return info.value


async def test_send_text_posts_the_documented_request_and_returns_the_wamid(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """The request must match Meta's documented send body, with the bearer token."""
    result = await send_text(session, config, to=TO, text="Seu pedido saiu para entrega")

    [request] = await fake.wait_for_requests(1)
    assert request.method == "POST"
    assert request.path == f"/v23.0/{PHONE_ID}/messages"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"].startswith("application/json")
    documented = fixture("cloud_send_text_request.json")
    assert request.json.keys() == documented.keys()
    assert request.json == {
        **documented,
        "to": TO,
        "text": {"preview_url": False, "body": "Seu pedido saiu para entrega"},
    }
    assert result.provider_message_id == fake.issued_ids[0]
    assert result.provider_message_id.startswith("wamid.")
    assert result.raw["contacts"] == [{"input": TO, "wa_id": "5511987654321"}]


async def test_fake_default_answer_is_shaped_like_the_fixture(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """End-to-end tests rely on the fake answering exactly like Meta does."""
    documented = fixture("cloud_send_text_response.json")
    result = await send_text(session, config, to=TO, text="oi")
    assert result.raw.keys() == documented.keys()
    assert result.raw["contacts"][0].keys() == documented["contacts"][0].keys()
    assert result.raw["messages"][0].keys() == documented["messages"][0].keys()


@pytest.mark.parametrize(
    "name", ["cloud_send_text_response.json", "cloud_send_response_accepted.json"]
)
async def test_documented_success_answers_give_their_wamid(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig, name: str
) -> None:
    """Both documented answers (with and without message_status) carry the id we store."""
    answer = fixture(name)
    fake.enqueue(200, answer)
    result = await send_text(session, config, to=TO, text="oi")
    assert result.provider_message_id == answer["messages"][0]["id"]
    assert result.raw == answer


async def test_every_send_gets_a_new_wamid(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """Concurrent sends must not collide: the sent-message store keys on the wamid."""
    results = await asyncio.gather(
        *(send_text(session, config, to=TO, text=f"mensagem {i}") for i in range(5))
    )
    await fake.wait_for_requests(5)
    ids = [result.provider_message_id for result in results]
    assert len(set(ids)) == 5
    assert sorted(ids) == sorted(fake.issued_ids)
    assert sorted(text for _, text in fake.sent_texts()) == [f"mensagem {i}" for i in range(5)]


async def test_portuguese_text_with_accents_and_emoji_arrives_byte_correct(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """Accents, emoji (outside the BMP) and flags must reach Meta unchanged, as UTF-8."""
    text = "Olá, João! Ação confirmada às 14h — pão de açúcar, coração ❤️ 🇧🇷 😊👍🏽"
    await send_text(session, config, to=TO, text=text)

    [request] = await fake.wait_for_requests(1)
    assert request.json["text"]["body"] == text
    assert json.dumps(text, ensure_ascii=False).encode("utf-8") in request.body


async def test_rate_limit_130429_is_retriable_with_retry_after(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """Throughput limits pass; the stage must wait as long as Meta asks."""
    fake.enqueue(400, fixture("cloud_error_130429.json"), {"Retry-After": "7"})
    error = await send_error(session, config)
    assert error.retriable is True
    assert error.code == "130429"
    assert error.http_status == 400  # branched on error.code, not on the status
    assert error.retry_after == 7.0
    assert error.outside_window is False
    assert "Rate limit hit" in str(error)


async def test_rate_limit_without_retry_after_leaves_the_delay_to_the_stage(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """Meta rarely sends Retry-After: no invented delay, the stage's backoff applies."""
    fake.enqueue(429, fixture("cloud_error_130429.json"))
    error = await send_error(session, config)
    assert (error.retriable, error.code, error.retry_after) == (True, "130429", None)


async def test_131047_outside_the_window_is_not_retriable(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """Free text after 24 hours of silence can only go as a template: never retry it."""
    body = graph_error(
        131047,
        "Re-engagement message",
        details="Message failed to send because more than 24 hours have passed since the "
        "customer last replied to this number.",
    )
    fake.enqueue(400, body, {"Retry-After": "30"})
    error = await send_error(session, config)
    assert error.outside_window is True
    assert error.retriable is False
    assert error.retry_after is None
    assert error.code == "131047"
    assert "24 hours" in str(error)


@pytest.mark.parametrize(
    ("status", "code", "retriable"),
    [
        (400, 131056, True),  # pair rate limit
        (400, 80007, True),  # WABA rate limit
        (400, 4, True),  # app request limit
        (400, 80008, True),  # spam rate limit
        (400, 131048, True),  # spam rate limit
        (500, 131000, True),  # something went wrong
        (400, 131026, False),  # undeliverable
        (400, 131051, False),  # unsupported type
        (400, 100, False),  # invalid parameter
        (401, 190, False),  # token expired
        (403, 10, False),  # permission denied
        (403, 200, False),  # permission not granted
        (400, 131008, False),  # required parameter missing
        (400, 131009, False),  # parameter value invalid
        (500, 131026, False),  # a known permanent code wins over a 5xx
        (400, 999999, False),  # unknown code on a 4xx: permanent
        (503, 999999, True),  # unknown code on a 5xx: transient
    ],
)
async def test_errors_are_classified_by_error_code_first(
    fake: FakeGraphAPI,
    session: aiohttp.ClientSession,
    config: WhatsAppCloudConfig,
    status: int,
    code: int,
    retriable: bool,
) -> None:
    """Meta reuses HTTP statuses across unrelated failures; the body code decides."""
    fake.enqueue(status, graph_error(code, f"(#{code}) test error"), {"Retry-After": "2"})
    error = await send_error(session, config)
    assert error.code == str(code)
    assert error.http_status == status
    assert error.retriable is retriable
    assert error.retry_after == (2.0 if retriable else None)
    assert error.outside_window is False


async def test_500_is_retriable_and_the_client_does_not_retry_itself(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """One call, one request: retrying belongs to the send stage (and its budget)."""
    fake.enqueue(500)
    error = await send_error(session, config)
    assert (error.retriable, error.code, error.http_status) == (True, "http_500", 500)
    await asyncio.sleep(0.05)
    assert len(fake.requests) == 1

    result = await send_text(session, config, to=TO, text="Olá")
    assert len(fake.requests) == 2
    assert result.provider_message_id == fake.issued_ids[-1]


async def test_html_502_from_a_proxy_is_retriable(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """A non-JSON gateway error still maps by status, with a readable excerpt."""
    fake.enqueue(502, "<html><body><h1>502 Bad Gateway</h1></body></html>")
    error = await send_error(session, config)
    assert (error.retriable, error.code) == (True, "http_502")
    assert "502 Bad Gateway" in str(error)


async def test_unknown_phone_number_id_is_permanent(
    fake: FakeGraphAPI, session: aiohttp.ClientSession
) -> None:
    """A misconfigured channel will not heal by retrying."""
    config = make_config(fake.base_url).model_copy(update={"phone_number_id": "999"})
    error = await send_error(session, config)
    assert (error.retriable, error.code, error.http_status) == (False, "100", 400)
    assert "999" in str(error)


async def test_success_without_a_message_id_is_not_retried(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """The message may have gone out: retrying could deliver it twice."""
    fake.enqueue(200, {"messaging_product": "whatsapp", "messages": []})
    error = await send_error(session, config)
    assert (error.retriable, error.code) == (False, "invalid_response")


async def test_slow_answer_times_out_as_retriable(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """A hung provider must not hold the send stage longer than the timeout."""
    fake.enqueue(200, delay=5.0)
    started = time.monotonic()
    error = await send_error(session, config, timeout=0.2)
    assert time.monotonic() - started < 2.0
    assert (error.retriable, error.code, error.http_status) == (True, "timeout", None)


async def test_connection_refused_is_retriable(session: aiohttp.ClientSession) -> None:
    """An unreachable provider is an outage, not a bad message."""
    error = await send_error(session, make_config(closed_port_url()))
    assert (error.retriable, error.code, error.http_status) == (True, "connection_error", None)


async def test_wrong_token_is_permanent_and_the_token_never_leaks(
    session: aiohttp.ClientSession,
) -> None:
    """An invalid token (190) needs a human; the token must not reach any log line."""
    async with FakeGraphAPI(access_token="the-token-meta-expects") as fake:
        error = await send_error(session, make_config(fake.base_url))
    assert (error.retriable, error.code, error.http_status) == (False, "190", 401)
    assert TOKEN not in full_text(error)


async def test_token_echoed_by_the_provider_is_redacted(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """Even if an answer quotes the token back, our error text must not carry it."""
    fake.enqueue(400, graph_error(190, f"Malformed access token {TOKEN}"))
    error = await send_error(session, config)
    assert TOKEN not in full_text(error)
    assert "Malformed access token [redacted]" in str(error)


@pytest.mark.parametrize("failure", ["timeout", "refused", "rate_limit", "permanent"])
async def test_token_never_in_the_exception_text(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, failure: str
) -> None:
    """Whatever the failure, formatting the error (with its causes) never shows the token."""
    config = make_config(closed_port_url() if failure == "refused" else fake.base_url)
    if failure == "timeout":
        fake.enqueue(200, delay=5.0)
    elif failure == "rate_limit":
        fake.enqueue(429, fixture("cloud_error_130429.json"))
    elif failure == "permanent":
        fake.enqueue(400, graph_error(131026, "Message undeliverable"))
    error = await send_error(session, config, timeout=0.2)
    assert TOKEN not in full_text(error)


async def test_mark_read_posts_the_documented_request(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """Read receipts use the same edge with Meta's documented body."""
    documented = fixture("cloud_mark_read_request.json")
    fake.enqueue(200, fixture("cloud_mark_read_response.json"))
    assert await mark_read(session, config, message_id=documented["message_id"]) is None

    [request] = await fake.wait_for_requests(1)
    assert request.path == f"/v23.0/{PHONE_ID}/messages"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.json == documented


async def test_mark_read_maps_errors_like_send(
    fake: FakeGraphAPI, session: aiohttp.ClientSession, config: WhatsAppCloudConfig
) -> None:
    """A receipt for an unknown message is permanent; a rate limit is not."""
    fake.enqueue(400, graph_error(100, "Invalid parameter"))
    fake.enqueue(429, fixture("cloud_error_130429.json"), {"Retry-After": "1"})
    with pytest.raises(ProviderError) as first:
        await mark_read(session, config, message_id="wamid.unknown")
    with pytest.raises(ProviderError) as second:
        await mark_read(session, config, message_id="wamid.unknown")
    assert (first.value.retriable, first.value.code) == (False, "100")
    assert (second.value.retriable, second.value.code, second.value.retry_after) == (
        True,
        "130429",
        1.0,
    )


async def test_wait_for_requests_reports_what_arrived(fake: FakeGraphAPI) -> None:
    """A test waiting for a send that never comes fails fast and says what it saw."""
    with pytest.raises(TimeoutError, match=r"expected 1 requests within 0\.1s, got 0"):
        await fake.wait_for_requests(1, timeout=0.1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    """Retry-After in seconds is read as is; nonsense is ignored rather than guessed."""
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    """Retry-After may also be an HTTP date: read it as seconds from now."""
    delay = parse_retry_after(formatdate(time.time() + 60, usegmt=True))
    assert delay is not None and 55 <= delay <= 61
