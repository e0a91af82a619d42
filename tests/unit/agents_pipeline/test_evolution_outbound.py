"""Evolution outbound against a real local Evolution API: what goes out, and how failures map."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents_pipeline.errors import ProviderError
from agents_pipeline.providers.configs import EvolutionConfig
from agents_pipeline.providers.evolution.outbound import send_text
from tests.fakes.evolution_api import FakeEvolutionAPI, evolution_error

FIXTURES = Path(os.environ.get("OMNICHAT_FIXTURES", "/work/shared/fixtures")) / "providers"
API_KEY = "B6D711FCDE4D4FD5936544120E713976-do-not-leak"
INSTANCE = "loja-centro"
NUMBER = "5511987654321"


def fixture(name: str) -> dict[str, Any]:
    """Load a provider fixture as it is, so the tests follow the documented shapes."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def make_config(
    base_url: str, *, api_key: str = API_KEY, instance: str = INSTANCE
) -> EvolutionConfig:
    """A channel config pointing at the fake (or at nothing)."""
    return EvolutionConfig(
        base_url=base_url, instance=instance, api_key=api_key, webhook_token="webhook-token"
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
async def fake() -> AsyncIterator[FakeEvolutionAPI]:
    async with FakeEvolutionAPI(api_key=API_KEY, instance=INSTANCE) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def config(fake: FakeEvolutionAPI) -> EvolutionConfig:
    return make_config(fake.base_url)


async def send_error(
    session: aiohttp.ClientSession, config: EvolutionConfig, **kwargs: Any
) -> ProviderError:
    """Send and return the ProviderError the call must raise."""
    with pytest.raises(ProviderError) as info:
        await send_text(session, config, to=NUMBER, text="Olá", **kwargs)
    return info.value


async def test_send_text_posts_the_v2_body_and_returns_the_key_id(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """v2 takes ``{number, text}`` (v1's ``textMessage`` is refused) with the apikey header."""
    result = await send_text(session, config, to=NUMBER, text="Seu pedido saiu para entrega")

    [request] = await fake.wait_for_requests(1)
    assert request.method == "POST"
    assert request.path == f"/message/sendText/{INSTANCE}"
    assert request.headers["apikey"] == API_KEY
    assert "Authorization" not in request.headers
    assert request.json == {"number": NUMBER, "text": "Seu pedido saiu para entrega"}
    assert set(request.json) <= set(fixture("evolution_send_text_request.json"))
    assert result.provider_message_id == fake.issued_ids[0]
    assert result.raw["key"]["remoteJid"] == f"{NUMBER}@s.whatsapp.net"


async def test_fake_default_answer_is_shaped_like_the_fixture(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """End-to-end tests rely on the fake answering exactly like Evolution does."""
    documented = fixture("evolution_send_text_response_docs.json")
    result = await send_text(session, config, to=NUMBER, text="oi")
    assert result.raw.keys() == documented.keys()
    assert result.raw["key"].keys() == documented["key"].keys()
    assert len(result.provider_message_id) == len(documented["key"]["id"])


async def test_documented_success_answer_gives_its_key_id(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """The documented answer (200, not 201) is a success too."""
    fake.enqueue(200, fixture("evolution_send_text_response_docs.json"))
    result = await send_text(session, config, to=NUMBER, text="Olá!")
    assert result.provider_message_id == "BAE594145F4C59B4"


async def test_every_send_gets_a_new_key_id(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """Concurrent sends must not collide: the sent-message store keys on the id."""
    results = await asyncio.gather(
        *(send_text(session, config, to=NUMBER, text=f"mensagem {i}") for i in range(5))
    )
    ids = {result.provider_message_id for result in results}
    assert len(ids) == 5
    assert ids == set(fake.issued_ids)


async def test_a_full_jid_is_passed_as_given(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """Groups and @lid contacts have no phone number: the jid must go through untouched."""
    jid = "120363041234567890@g.us"
    result = await send_text(session, config, to=jid, text="Bom dia, grupo")
    [request] = await fake.wait_for_requests(1)
    assert request.json["number"] == jid
    assert result.raw["key"]["remoteJid"] == jid


async def test_portuguese_text_with_accents_and_emoji_arrives_byte_correct(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """Accents, emoji (outside the BMP) and flags must reach Evolution unchanged, as UTF-8."""
    text = "Olá, João! Ação confirmada às 14h — pão de açúcar, coração ❤️ 🇧🇷 😊👍🏽"
    await send_text(session, config, to=NUMBER, text=text)

    [request] = await fake.wait_for_requests(1)
    assert request.json["text"] == text
    assert json.dumps(text, ensure_ascii=False).encode("utf-8") in request.body


async def test_instance_name_is_quoted_into_the_path(
    session: aiohttp.ClientSession,
) -> None:
    """An instance name with spaces or slashes must not change the path it goes to."""
    async with FakeEvolutionAPI(api_key=API_KEY) as fake:
        await send_text(
            session, make_config(fake.base_url, instance="Loja Centro/2"), to=NUMBER, text="oi"
        )
    [request] = fake.requests
    assert request.path_params["instance"] == "Loja Centro/2"


async def test_500_is_retriable_and_the_client_does_not_retry_itself(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """One call, one request: retrying belongs to the send stage (and its budget)."""
    fake.enqueue(500, fixture("evolution_error_500.json"))
    error = await send_error(session, config)
    assert (error.retriable, error.code, error.http_status) == (True, "http_500", 500)
    assert "Cannot read properties of undefined" in str(error)
    await asyncio.sleep(0.05)
    assert len(fake.requests) == 1

    result = await send_text(session, config, to=NUMBER, text="Olá")
    assert len(fake.requests) == 2
    assert result.provider_message_id == fake.issued_ids[-1]


@pytest.mark.parametrize(
    ("status", "retriable"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
async def test_status_decides_whether_a_retry_can_help(
    fake: FakeEvolutionAPI,
    session: aiohttp.ClientSession,
    config: EvolutionConfig,
    status: int,
    retriable: bool,
) -> None:
    """Evolution has no stable error codes: rate limits and outages pass, the rest does not."""
    fake.enqueue(status, evolution_error(status, ["something failed"]), {"Retry-After": "4"})
    error = await send_error(session, config)
    assert (error.code, error.http_status, error.retriable) == (f"http_{status}", status, retriable)
    assert error.retry_after == (4.0 if retriable else None)
    assert "something failed" in str(error)


async def test_number_not_on_whatsapp_is_permanent_and_readable(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """Evolution's 400 lists the number check; the error must say so to a human."""
    message = [{"jid": f"{NUMBER}@s.whatsapp.net", "exists": False, "number": NUMBER}]
    fake.enqueue(400, evolution_error(400, message))
    error = await send_error(session, config)
    assert (error.retriable, error.code) == (False, "http_400")
    assert '"exists": false' in str(error)


async def test_a_body_code_is_used_when_present(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """Some Evolution builds and proxies answer with a code: it is more precise than the status."""
    fake.enqueue(503, {"code": "ECONNREFUSED", "message": "connect ECONNREFUSED 10.0.0.5:5432"})
    error = await send_error(session, config)
    assert (error.retriable, error.code, error.http_status) == (True, "ECONNREFUSED", 503)
    assert "10.0.0.5" in str(error)


async def test_unknown_instance_is_permanent(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession
) -> None:
    """A deleted or misspelled instance will not heal by retrying."""
    error = await send_error(session, make_config(fake.base_url, instance="outra"))
    assert (error.retriable, error.code, error.http_status) == (False, "http_404", 404)
    assert 'The "outra" instance does not exist' in str(error)


async def test_success_without_a_key_id_is_not_retried(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """The message may have gone out: retrying could deliver it twice."""
    fake.enqueue(201, {"status": "PENDING"})
    error = await send_error(session, config)
    assert (error.retriable, error.code) == (False, "invalid_response")


async def test_slow_answer_times_out_as_retriable(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, config: EvolutionConfig
) -> None:
    """A hung instance must not hold the send stage longer than the timeout."""
    fake.enqueue(201, delay=5.0)
    started = time.monotonic()
    error = await send_error(session, config, timeout=0.2)
    assert time.monotonic() - started < 2.0
    assert (error.retriable, error.code, error.http_status) == (True, "timeout", None)


async def test_connection_refused_is_retriable(session: aiohttp.ClientSession) -> None:
    """An unreachable gateway is an outage, not a bad message."""
    error = await send_error(session, make_config(closed_port_url()))
    assert (error.retriable, error.code, error.http_status) == (True, "connection_error", None)


async def test_wrong_api_key_is_permanent_and_the_key_never_leaks(
    session: aiohttp.ClientSession,
) -> None:
    """A rotated key needs a human; the key must not reach any log line."""
    async with FakeEvolutionAPI(api_key="the-key-evolution-expects") as fake:
        error = await send_error(session, make_config(fake.base_url))
    assert (error.retriable, error.code, error.http_status) == (False, "http_401", 401)
    assert API_KEY not in full_text(error)


@pytest.mark.parametrize("failure", ["timeout", "refused", "echo", "server_error"])
async def test_api_key_never_in_the_exception_text(
    fake: FakeEvolutionAPI, session: aiohttp.ClientSession, failure: str
) -> None:
    """Whatever the failure, formatting the error (with its causes) never shows the key."""
    config = make_config(closed_port_url() if failure == "refused" else fake.base_url)
    if failure == "timeout":
        fake.enqueue(201, delay=5.0)
    elif failure == "echo":
        fake.enqueue(401, evolution_error(401, f"apikey {API_KEY} is not valid"))
    elif failure == "server_error":
        fake.enqueue(500, fixture("evolution_error_500.json"))
    error = await send_error(session, config, timeout=0.2)
    assert API_KEY not in full_text(error)
    if failure == "echo":
        assert "apikey [redacted] is not valid" in str(error)
