"""Usage: GET /api/v1/usage, the caller's workspace's counters per day or month."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from aiohttp import web

from gateway.errors import ApiError
from gateway.responses import ok
from gateway.services import caller, services
from storage import usage

MAX_DAYS = 400  # bounds one query's scan; a client wanting more asks again
GRANULARITIES = ("day", "month")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def query_day(request: web.Request, name: str) -> date:
    """A required ``YYYY-MM-DD`` query parameter, or a 400 ``invalid_parameter``."""
    raw = request.query.get(name)
    if not raw:
        raise ApiError(400, "invalid_parameter", f"{name} is required (YYYY-MM-DD)", {"name": name})
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be a date YYYY-MM-DD", {"name": name}
        ) from None


def period_label(day: date, granularity: str) -> str:
    """``YYYY-MM-DD`` for a day, ``YYYY-MM`` for a month: sortable and unambiguous."""
    return day.isoformat() if granularity == "day" else day.strftime("%Y-%m")


def usage_item(row: dict[str, Any], granularity: str) -> dict[str, Any]:
    """One period as the API shows it (counters as integers, never null)."""
    item: dict[str, Any] = {"period": period_label(row["period"], granularity)}
    for kind in usage.KINDS:
        item[kind] = int(row[kind] or 0)
    return item


async def get_usage(request: web.Request) -> web.Response:
    """Totals of the workspace's counters per period with any usage, oldest first."""
    start = query_day(request, "from")
    end = query_day(request, "to")
    granularity = request.query.get("granularity", "day")
    if granularity not in GRANULARITIES:
        raise ApiError(
            400, "invalid_parameter", "granularity must be day or month", {"name": "granularity"}
        )
    if start > end:
        raise ApiError(400, "invalid_parameter", "from must not be after to", {"name": "from"})
    if (end - start).days + 1 > MAX_DAYS:
        raise ApiError(
            400,
            "invalid_parameter",
            f"the range covers more than {MAX_DAYS} days",
            {"name": "to", "max_days": MAX_DAYS},
        )
    async with services(request).pool.connection() as conn:
        rows = await usage.usage_between(
            conn,
            workspace_id=caller(request).workspace_id,
            start=start,
            end=end,
            granularity=granularity,
        )
    return ok({"items": [usage_item(r, granularity) for r in rows]})
