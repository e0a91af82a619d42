"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.openapi import build_openapi
from gateway.responses import ok
from gateway.routing import ROUTE_SPECS
from gateway.services import services


async def healthz(request: web.Request) -> web.Response:
    """200 while the process runs."""
    return ok({"status": "ok"})


async def _check_db(request: web.Request) -> bool:
    try:
        async with services(request).pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
    except Exception:
        return False
    return True


async def _check_redis(request: web.Request) -> bool:
    try:
        return bool(await asyncio.wait_for(services(request).redis.ping(), 2.0))
    except Exception:
        return False


async def readyz(request: web.Request) -> web.Response:
    """200 when the broker, the database and Redis all answer; 503 naming what fails."""
    broker, database, redis = await asyncio.gather(
        services(request).producer.ping(), _check_db(request), _check_redis(request)
    )
    body = {
        "broker": "ok" if broker else "unavailable",
        "database": "ok" if database else "unavailable",
        "redis": "ok" if redis else "unavailable",
    }
    return ok(body, 200 if broker and database and redis else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    data = generate_latest(services(request).metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The whole API as OpenAPI 3."""
    return ok(build_openapi(list(request.app[ROUTE_SPECS].values())))
