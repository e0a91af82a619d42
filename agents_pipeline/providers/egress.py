"""Where provider calls may go: the outbound address policy and the HTTP session that keeps it.

A channel's ``base_url`` is set by a workspace, and every send to it carries the channel's
credentials. Unless ``OMNICHAT_ALLOW_PRIVATE_PROVIDER_URLS`` is true (development), a
provider call may connect only to public unicast addresses: never loopback, private,
link-local, multicast, unspecified or reserved ranges, nor the cloud metadata endpoints,
in IPv4 or IPv6 (IPv4 embedded in IPv6 is judged as the IPv4 it carries).

The address is checked where the connection is made, not on the URL: the session's
resolver drops forbidden answers of a name lookup (and the connector connects only to the
addresses it returns, so a second lookup cannot swap them: no DNS-rebinding gap), and the
socket factory refuses any forbidden address it is asked to connect to (literal IPs in the
URL never reach the resolver). Either raises ``DestinationNotAllowed``, which
``providers.http`` turns into the ``destination_not_allowed`` error.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata and host-agent endpoints. Most already fall in a refused range
# (169.254/16, fd00::/8, 100.64/10); Azure's WireServer is a public address.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean IMDS
        "169.254.169.253",  # AWS VPC DNS
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS VPC DNS over IPv6
        "fd00:ec2::123",  # AWS time sync over IPv6
    )
)
# IPv6 prefixes that carry an IPv4 address in their last 32 bits.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPAT = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible addresses (::a.b.c.d)


class DestinationNotAllowed(OSError):
    """A provider call would connect to an address the outbound policy refuses.

    An ``OSError`` so that aiohttp treats it as a failed connection (and closes what it
    opened); the text is the same for every refusal, so that happy-eyeballs keeps the type
    when several addresses fail alike.
    """

    MESSAGE = "destination not allowed by the outbound address policy"

    def __init__(self) -> None:
        super().__init__(errno.EACCES, self.MESSAGE)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in _NAT64):
        return low
    if ip in _COMPAT and int(ip) > 1:  # ::, ::1 are themselves (unspecified, loopback)
        return low
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why the policy refuses an address (``loopback``, ``private``, ...), None if it allows it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        v4 = _embedded_ipv4(ip)
        if v4 is not None:
            embedded = refusal(v4)
            # A mapped address *is* the IPv4 one; other embeddings are refused when the
            # IPv4 is, and judged as IPv6 otherwise.
            if embedded is not None or ip.ipv4_mapped is not None:
                return embedded
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "private"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:  # shared address space (100.64/10), benchmarking, documentation...
        return "not_global"
    return None


def address_refusal(host: str) -> str | None:
    """``refusal`` for an address given as text; a text that is no address is refused."""
    try:
        return refusal(ipaddress.ip_address(host))
    except ValueError:
        return "not_an_address"


class GuardedResolver(AbstractResolver):
    """A resolver that returns only the addresses the policy allows (raises if none is)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve, then drop every forbidden answer."""
        answers = await self._inner.resolve(host, port, family)
        allowed = []
        for answer in answers:
            why = address_refusal(answer["host"])
            if why is None:
                allowed.append(answer)
            else:
                log.warning("outbound policy: %s resolves to a %s address: refused", host, why)
        if not allowed:
            raise DestinationNotAllowed()
        return allowed

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


def guarded_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket factory: refuse to create a socket for a forbidden address."""
    family, type_, proto, _, sockaddr = addr_info
    why = address_refusal(str(sockaddr[0]))
    if why is not None:
        log.warning("outbound policy: connection to a %s address refused", why)
        raise DestinationNotAllowed()
    return socket.socket(family=family, type=type_, proto=proto)


def provider_session(*, allow_private: bool) -> aiohttp.ClientSession:
    """The HTTP session provider calls use: guarded unless private addresses are allowed.

    ``trust_env=False`` always: a proxy from the environment would connect on our behalf
    to wherever the URL says, past the socket check.
    """
    if allow_private:
        return aiohttp.ClientSession(trust_env=False)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(), socket_factory=guarded_socket)
    return aiohttp.ClientSession(connector=connector, trust_env=False)
