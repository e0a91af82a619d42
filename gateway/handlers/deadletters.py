"""Dead letters: /api/v1/deadletters. What the pipeline gave up on, and its replay.

Payloads hold customers' messages, so every route needs an ``admin`` key (a ``read``
key gets 403 even for the GETs). A workspace sees only its own dead letters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from agents_pipeline.deadletters import (
    NotReplayable,
    ReplayRecord,
    deadletter_view,
    replay,
)
from gateway.auth import Caller
from gateway.bodies import pagination, path_uuid
from gateway.errors import ApiError, not_found
from gateway.producer import BrokerUnavailable
from gateway.responses import listing, ok
from gateway.services import caller, services
from storage import audit
from storage import deadletters as store

STAGE_CHARS = 40


def _admin(request: web.Request) -> Caller:
    """The caller, who must hold the ``admin`` scope."""
    who = caller(request)
    if "admin" not in who.scopes:
        raise ApiError(403, "insufficient_scope", "dead letters need an admin key")
    return who


def _since(request: web.Request) -> datetime | None:
    """``since``: an ISO 8601 time (UTC when it names no zone)."""
    raw = request.query.get("since")
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "since must be an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def list_deadletters(request: web.Request) -> web.Response:
    """The workspace's dead letters, newest first, by stage and since a time."""
    who = _admin(request)
    limit, cursor = pagination(request)
    stage = request.query.get("stage") or None
    if stage is not None and len(stage) > STAGE_CHARS:
        raise ApiError(400, "invalid_parameter", "stage is too long")
    async with services(request).pool.connection() as conn:
        rows, nxt = await store.list_deadletters(
            conn,
            workspace_id=who.workspace_id,
            limit=limit,
            cursor=cursor,
            stage=stage,
            since=_since(request),
        )
    return listing([deadletter_view(r) for r in rows], nxt)


async def get_deadletter(request: web.Request) -> web.Response:
    """One dead letter."""
    who = _admin(request)
    deadletter_id = path_uuid(request, "id", "dead letter")
    async with services(request).pool.connection() as conn:
        row = await store.get(conn, deadletter_id=deadletter_id, workspace_id=who.workspace_id)
    if row is None:
        raise not_found("dead letter")
    return ok(deadletter_view(row))


async def replay_deadletter(request: web.Request) -> web.Response:
    """Produce the failed record again to its stage's topic (202: handled in the stream)."""
    who = _admin(request)
    svc = services(request)
    deadletter_id = path_uuid(request, "id", "dead letter")

    async def produce(record: ReplayRecord) -> None:
        await svc.producer.send(
            record.topic,
            key=record.key,
            value=record.value,
            headers=[],
            partition=record.partition,
        )

    try:
        done = await replay(
            svc.pool,
            deadletter_id=deadletter_id,
            workspace_id=who.workspace_id,
            produce=produce,
            partitions=svc.settings.topic_partitions,
        )
    except NotReplayable as exc:
        raise ApiError(409, "not_replayable", str(exc)) from None
    except BrokerUnavailable as exc:
        svc.metrics.broker_unavailable.inc()
        raise ApiError(
            503,
            "broker_unavailable",
            "the record could not be produced again; retry",
            headers={"Retry-After": str(svc.settings.retry_after_seconds)},
        ) from exc
    if done is None:
        raise not_found("dead letter")
    row, record = done
    async with svc.pool.connection() as conn, conn.transaction():
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="deadletter.replay",
            object_type="deadletter",
            object_id=deadletter_id,
            details={"stage": row["stage"], "topic": record.topic},
        )
    return ok(_replayed(row, record), 202)


def _replayed(row: dict[str, Any], record: ReplayRecord) -> dict[str, Any]:
    """The answer to a replay: the dead letter and where its record went."""
    return {
        **deadletter_view(row),
        "replay": {
            "topic": record.topic,
            "key": record.key.decode(),
            "partition": record.partition,
        },
    }
