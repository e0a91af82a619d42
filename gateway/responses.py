"""JSON answers: UUIDs as strings, times as ISO 8601 in UTC, lists in the cursor envelope."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from aiohttp import web


def _default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("bytes never go into an API answer")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any) -> str:
    """Serialise an answer."""
    return json.dumps(data, default=_default, ensure_ascii=False, separators=(",", ":"))


def ok(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(
        text=dumps(data), status=status, content_type="application/json", charset="utf-8"
    )


def listing(items: list[Any], next_cursor: str | None) -> web.Response:
    """A page of a list."""
    return ok({"items": items, "next_cursor": next_cursor})


def no_content() -> web.Response:
    """204 for deletes."""
    return web.Response(status=204)
