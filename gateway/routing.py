"""The route table: every route once, with what the auth middleware and OpenAPI need."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["key", "admin", "public", "provider"]


@dataclass(frozen=True)
class Route:
    """One route of the API.

    ``auth``: ``key`` (API key + X-Workspace-ID), ``admin`` (platform admin
    token), ``provider`` (the provider's own signature or token, checked by the
    handler), ``public`` (none).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth = "key"
    tag: str = "api"
    body: type[BaseModel] | None = None
    status: int = 200
    query: tuple[str, ...] = field(default=())


ROUTE_SPECS = web.AppKey("route_specs", dict)


def register(app: web.Application, routes: list[Route]) -> None:
    """Add every route to the router and remember its spec by resource."""
    specs: dict[tuple[str, str], Route] = {}
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)
        specs[(r.method, r.path)] = r
    app[ROUTE_SPECS] = specs


def spec_for(request: web.Request) -> Route | None:
    """The spec of the route that matched this request."""
    info = request.match_info.route.resource
    if info is None:
        return None
    return request.app[ROUTE_SPECS].get((request.method, info.canonical))
