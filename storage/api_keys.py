"""API keys: stored only as a sha256 hash beside a visible prefix.

A key looks like ``omk_<8 hex>_<43 urlsafe chars>``; the prefix ``omk_<8 hex>``
is shown in lists. 256 bits of randomness make a fast hash safe here (no
dictionary to attack), and let every request be checked with one lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any
from uuid import UUID

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
_COLS = (
    "id, workspace_id, name, prefix, scopes, expires_at, revoked_at, last_used_at, "
    "created_at, updated_at"
)


def new_key() -> tuple[str, str, str]:
    """A fresh (key, prefix, hash)."""
    prefix = f"omk_{secrets.token_hex(4)}"
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(
    conn: Conn, *, workspace_id: UUID, name: str, scopes: list[str], expires_at: datetime | None
) -> tuple[Row, str]:
    """Create a key; returns the row and the secret, which is never readable again."""
    key, prefix, key_hash = new_key()
    cur = await conn.execute(
        f"INSERT INTO api_keys (workspace_id, name, prefix, key_hash, scopes, expires_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLS}",
        (workspace_id, name, prefix, key_hash, scopes, expires_at),
    )
    return await cur.fetchone(), key  # type: ignore[return-value]


async def find_by_hash(conn: Conn, *, key_hash: str) -> Row | None:
    """The key with this hash, with its workspace's active flag (for auth)."""
    cur = await conn.execute(
        "SELECT k.id, k.workspace_id, k.scopes, k.expires_at, k.revoked_at,"
        " w.is_active AS workspace_active"
        " FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id WHERE k.key_hash = %s",
        (key_hash,),
    )
    return await cur.fetchone()


async def list_keys(
    conn: Conn, *, workspace_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """A workspace's keys, newest first, without secrets."""
    cond, params = keyset(cursor, descending=True)
    cur = await conn.execute(
        f"SELECT {_COLS} FROM api_keys WHERE workspace_id = %s AND {cond}"
        f" {order_by(descending=True)} LIMIT %s",
        [workspace_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def revoke_key(conn: Conn, *, workspace_id: UUID, key_id: UUID) -> str | None:
    """Revoke a key of this workspace; returns its hash (to evict caches) or None."""
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
        " WHERE id = %s AND workspace_id = %s RETURNING key_hash",
        (key_id, workspace_id),
    )
    row = await cur.fetchone()
    return row["key_hash"] if row else None
