"""Keyset pagination: opaque cursors over (created_at, id), stable under inserts."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from uuid import UUID

MAX_LIMIT = 200


class BadCursor(ValueError):
    """A cursor that this API did not issue."""


def encode_cursor(row: dict[str, Any]) -> str:
    """Cursor pointing after ``row`` (which has created_at and id)."""
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) a cursor points after; BadCursor when it is not ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), UUID(ident)
    except (ValueError, TypeError) as exc:
        raise BadCursor("invalid cursor") from exc


def keyset(cursor: str | None, *, descending: bool, alias: str = "") -> tuple[str, list]:
    """SQL condition and params for rows after ``cursor`` in the given order."""
    if not cursor:
        return "TRUE", []
    created, ident = decode_cursor(cursor)
    p = f"{alias}." if alias else ""
    op = "<" if descending else ">"
    return f"({p}created_at, {p}id) {op} (%s, %s)", [created, ident]


def order_by(*, descending: bool, alias: str = "") -> str:
    """ORDER BY clause matching ``keyset``."""
    p = f"{alias}." if alias else ""
    d = "DESC" if descending else "ASC"
    return f"ORDER BY {p}created_at {d}, {p}id {d}"


def page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Split ``limit + 1`` fetched rows into the page and the next cursor."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1])
    return rows, None
