"""The outbound address policy: which addresses provider calls may reach, checked at connect time.

The table covers IPv4, IPv6 and IPv4 carried inside IPv6. The session tests run real
requests against a local fake provider (on 127.0.0.1, which the policy refuses): a
refused call must not reach it at all, whether the URL names the address or a name
that resolves to it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from agents_pipeline.errors import ProviderError
from agents_pipeline.providers.configs import EvolutionConfig
from agents_pipeline.providers.egress import (
    DestinationNotAllowed,
    GuardedResolver,
    address_refusal,
    guarded_socket,
    provider_session,
)
from agents_pipeline.providers.evolution.outbound import send_text
from agents_pipeline.providers.http import post_json
from tests.fakes.evolution_api import FakeEvolutionAPI

API_KEY = "egress-test-key"


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        # IPv4
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.10", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("169.254.10.10", "link_local"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),  # Azure's WireServer is a public address
        ("100.64.0.1", "not_global"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "private"),  # reserved, listed as private by the standard library
        ("255.255.255.255", "private"),
        ("192.0.2.1", "private"),  # documentation
        ("198.18.0.1", "private"),  # benchmarking
        ("8.8.8.8", None),
        ("157.240.22.35", None),  # a Meta address
        ("172.32.0.1", None),  # just outside 172.16/12
        # IPv6
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link_local"),
        ("fe80::1%eth0", "link_local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fd00:ec2::254", "metadata"),
        ("fec0::1", "private"),  # deprecated site-local
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),  # documentation
        ("2001:4860:4860::8888", None),
        ("2a03:2880:f12f:83:face:b00c:0:25de", None),  # a Meta address
        # IPv4 inside IPv6
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:8.8.8.8", None),  # mapped: judged as the IPv4 address it is
        ("::127.0.0.1", "loopback"),  # deprecated IPv4-compatible
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("2002:808:808::1", None),  # 6to4 of 8.8.8.8
        # not an address at all
        ("localhost", "not_an_address"),
    ],
)
def test_address_policy(address: str, refusal: str | None) -> None:
    assert address_refusal(address) == refusal


class StaticResolver(AbstractResolver):
    """Answers every name with the given addresses (what a DNS answer could say)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_keeps_only_allowed_answers() -> None:
    resolver = GuardedResolver(StaticResolver("10.0.0.1", "93.184.216.34", "::1"))
    answers = await resolver.resolve("example.com", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34"]


async def test_the_resolver_refuses_a_name_with_only_forbidden_answers() -> None:
    resolver = GuardedResolver(StaticResolver("169.254.169.254", "fd00:ec2::254"))
    with pytest.raises(DestinationNotAllowed):
        await resolver.resolve("metadata.google.internal", 80)


def test_the_socket_factory_refuses_a_forbidden_address_and_allows_a_public_one() -> None:
    with pytest.raises(DestinationNotAllowed):
        guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    with pytest.raises(DestinationNotAllowed):
        guarded_socket((socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:10.0.0.1", 80, 0, 0)))
    sock = guarded_socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80)))
    sock.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeEvolutionAPI]:
    async with FakeEvolutionAPI(api_key=API_KEY) as fake:
        yield fake


def config(base_url: str) -> EvolutionConfig:
    return EvolutionConfig(
        base_url=base_url, instance="loja", api_key=API_KEY, webhook_token="webhook-token"
    )


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1", "2130706433"],
)
async def test_a_guarded_session_never_reaches_a_local_provider(
    fake: FakeEvolutionAPI, host: str
) -> None:
    """Literal address, a name resolving to it, IPv4-mapped, legacy numeric forms: no
    request arrives, and the error is ours (no address, no credential in it)."""
    port = fake.base_url.rsplit(":", 1)[1]
    async with provider_session(allow_private=False) as session:
        with pytest.raises(ProviderError) as info:
            await send_text(session, config(f"http://{host}:{port}"), to="5511", text="oi")
    assert info.value.code in ("destination_not_allowed", "invalid_url")
    if host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
        assert info.value.code == "destination_not_allowed"
        assert info.value.retriable is False
    assert fake.requests == []
    assert API_KEY not in str(info.value) and "127.0.0.1" not in str(info.value)


async def test_an_allowing_session_reaches_it(fake: FakeEvolutionAPI) -> None:
    async with provider_session(allow_private=True) as session:
        result = await send_text(session, config(fake.base_url), to="5511", text="oi")
    assert result.provider_message_id == fake.issued_ids[0]


async def test_a_redirect_is_an_error_and_is_not_followed(fake: FakeEvolutionAPI) -> None:
    fake.enqueue(307, headers={"Location": f"{fake.base_url}/elsewhere"})
    async with provider_session(allow_private=True) as session:
        with pytest.raises(ProviderError) as info:
            await send_text(session, config(fake.base_url), to="5511", text="oi")
    assert (info.value.code, info.value.retriable, info.value.http_status) == (
        "redirect_not_followed",
        False,
        307,
    )
    assert [r.path for r in fake.requests] == ["/message/sendText/loja"]


async def test_post_json_itself_does_not_follow_redirects(fake: FakeEvolutionAPI) -> None:
    fake.always(302, headers={"Location": "/message/sendText/other"})
    kw: dict[str, Any] = {"provider": "test", "headers": {"apikey": API_KEY}, "timeout": 2}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ProviderError) as info:
            body = {"number": "5511", "text": "oi"}
            await post_json(session, f"{fake.base_url}/message/sendText/loja", body, **kw)
    assert info.value.code == "redirect_not_followed"
    assert len(fake.requests) == 1
