"""What the gateway's handlers share, opened once by ``create_app`` and closed with it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from gateway.auth import Caller, KeyCache
from gateway.auth_epoch import AuthEpoch
from gateway.channel_cache import ChannelCache
from gateway.idempotency import IdempotencyCache
from gateway.metrics import GatewayMetrics
from gateway.producer import DurableProducer
from omnichat.settings import Settings
from storage.secrets import SecretBox


@dataclass
class Services:
    """The gateway process's shared resources."""

    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    producer: DurableProducer
    box: SecretBox
    auth_epoch: AuthEpoch
    keys: KeyCache
    channels: ChannelCache
    idempotency: IdempotencyCache
    metrics: GatewayMetrics


SERVICES = web.AppKey("services", Services)
CALLER = web.RequestKey("caller", Caller)


def services(request: web.Request) -> Services:
    """The services of the app serving this request."""
    return request.app[SERVICES]


def caller(request: web.Request) -> Caller:
    """The authenticated caller (set by the auth middleware on workspace routes)."""
    return request[CALLER]
