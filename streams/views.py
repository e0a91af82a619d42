"""Admin views over the worker's tables, served by each worker's Faust web server.

``GET /api/v1/stats/{usage,conversations,channels,agent-runs,quota}`` with the
API's authentication (``Authorization: Bearer <key>`` + ``X-Workspace-ID``). A
workspace's tables live on the worker that owns its partition: any worker
answers, forwarding the request to the owner when it is not it.

Faust's own ``table_route`` is not used: it hashes the key as the changelog
serializes it (JSON, with quotes), while our tables put a workspace's entries on
the partition of its raw id (``streams/partitions.py``), so it would route to the
wrong worker. The owner comes from the assignor's changelog distribution instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import faust
from yarl import URL

from agents_pipeline import stats
from agents_pipeline.quota import INBOUND, INBOUND_SEEN, TOKENS, counter_key, month_of
from gateway.auth import KeyCache, authenticate, require_scope
from gateway.auth_epoch import AuthEpoch
from gateway.errors import ApiError
from gateway.handlers.usage import MAX_DAYS, query_day
from storage import quotas, usage
from streams.partitions import workspace_partition

if TYPE_CHECKING:
    from streams.app import OmnichatApp

PREFIX = "/api/v1/stats"
ROUTED = "X-Omnichat-Routed"  # set on a forwarded request: never forwarded twice


def _error(web: faust.web.Web, exc: ApiError) -> faust.web.Response:
    body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
    return web.json(body, status=exc.status)


def register(
    app: OmnichatApp,
    *,
    usage_counters: faust.Table,
    stats_table: faust.Table,
    quota_counters: faust.Table,
) -> None:
    """Add the admin views to the worker's web server."""
    keys = KeyCache(  # revocations elsewhere are seen at once: the auth epoch in Redis
        app.settings.auth_cache_seconds,
        AuthEpoch(app.resources.redis),
        app.settings.auth_cache_unverified_seconds,
    )
    quota_table = quota_counters

    def serve(path: str, build: Callable[[faust.web.Request, UUID], Awaitable[dict]]) -> None:
        async def answer(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
            try:
                pool = await app.resources.pool()
                who = await authenticate(request, pool, keys)  # type: ignore[arg-type]
                require_scope(who, "GET")
                owner = owner_of(who.workspace_id)
                if owner == _ident(app.conf.canonical_url):
                    return web.json(_jsonable(await build(request, who.workspace_id)))
                if owner is None or ROUTED in request.headers:
                    raise ApiError(503, "not_ready", "the workers are rebalancing; retry")
                return await forward(web, request, owner)
            except ApiError as exc:
                return _error(web, exc)

        class StatsView(faust.web.View):
            async def get(self, request: faust.web.Request) -> faust.web.Response:
                return await answer(self.web, request)

            async def post(self, request: faust.web.Request) -> faust.web.Response:
                return _error(self.web, ApiError(405, "method_not_allowed", "views are read-only"))

            put = patch = delete = post

        StatsView.__name__ = "Stats" + path.strip("/").title().replace("-", "")
        app.page(PREFIX + path)(StatsView)

    changelog = stats_table.changelog_topic.get_topic_name()

    def owner_of(workspace_id: UUID) -> tuple[str, int] | None:
        """(host, port) of the worker that owns the workspace's partition, None mid-rebalance."""
        partition = workspace_partition(workspace_id, app.settings.topic_partitions)
        for url, topics in app.assignor.changelog_distribution.items():
            if partition in topics.get(changelog, ()):
                return _ident(URL(url))
        return None

    async def forward(
        web: faust.web.Web, request: faust.web.Request, owner: tuple[str, int]
    ) -> faust.web.Response:
        url = request.url.with_host(owner[0]).with_port(owner[1])
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers[ROUTED] = "1"
        async with app.http_client.get(url, headers=headers) as resp:
            return web.text(await resp.text(), content_type=resp.content_type, status=resp.status)

    def doc(workspace_id: UUID) -> stats.Stats | None:
        return stats_table.data.get(str(workspace_id))

    async def usage_view(request: faust.web.Request, workspace_id: UUID) -> dict:
        """Usage per day from the usage table (the same counters as usage_records)."""
        start = query_day(request, "from")  # type: ignore[arg-type]
        end = query_day(request, "to")  # type: ignore[arg-type]
        if start > end or (end - start).days + 1 > MAX_DAYS:
            raise ApiError(
                400, "invalid_parameter", f"from..to must be 1 to {MAX_DAYS} days", {"name": "to"}
            )
        items = []
        day: date = start
        while day <= end:
            counts = {
                k: int(usage_counters.data.get(f"{workspace_id}:{day.isoformat()}:{k}", 0))
                for k in usage.KINDS
            }
            if any(counts.values()):
                items.append({"period": day.isoformat(), **counts})
            day += timedelta(days=1)
        return {"items": items}

    async def conversations_view(request: faust.web.Request, workspace_id: UUID) -> dict:
        return stats.open_conversations(doc(workspace_id))

    async def channels_view(request: faust.web.Request, workspace_id: UUID) -> dict:
        return {"items": stats.channel_messages(doc(workspace_id))}

    async def runs_view(request: faust.web.Request, workspace_id: UUID) -> dict:
        return stats.agent_runs(doc(workspace_id))

    async def quota_view(request: faust.web.Request, workspace_id: UUID) -> dict:
        """This month's limits and what counts against them, as the generate stage sees it."""
        month = month_of(datetime.now(UTC))
        pool = await app.resources.pool()
        async with pool.connection() as conn:
            limits = await quotas.monthly_limits(conn, workspace_id=workspace_id)
        inbound = int(quota_table.data.get(counter_key(workspace_id, month, INBOUND_SEEN), 0))
        tokens = int(quota_table.data.get(counter_key(workspace_id, month, TOKENS), 0))
        return {
            "period": month,
            "plan": limits["plan"],
            "items": [
                {"metric": INBOUND, "monthly_limit": limits[INBOUND], "used": inbound},
                {"metric": TOKENS, "monthly_limit": limits[TOKENS], "used": tokens},
            ],
        }

    serve("/usage", usage_view)
    serve("/conversations", conversations_view)
    serve("/channels", channels_view)
    serve("/agent-runs", runs_view)
    serve("/quota", quota_view)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, UUID | date):
        return str(value)
    return value


def _ident(url: URL) -> tuple[str, int]:
    return (url.host or "", url.port or 80)
