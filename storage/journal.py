"""``journal``: records the gateway accepted, kept until the pipeline has carried them.

A *lane* is one gateway process (a uuid per start); ``seq`` orders its records. Each lane is
held by its process through a session advisory lock (``lane_lock_key``), so another process
can tell a dead lane (lock free) from a live one and take its records over. Connections
return dict rows (``storage.db``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from storage.db import Conn

Headers = Sequence[tuple[str, bytes]]

# Arrays through unnest: one statement text whatever the batch size (prepared once).
_INSERT = (
    "INSERT INTO journal (lane, seq, topic, key, value, headers)"
    " SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %b::bytea[], %b::bytea[], %b::bytea[])"
)


class Record(NamedTuple):
    """One record to produce: what a journal row holds (a tuple: one per webhook, hot path)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()


def encode_headers(headers: Headers) -> bytes | None:
    """Kafka headers as one bytea (latin-1 maps every byte to one character and back)."""
    if not headers:
        return None
    return json.dumps([[k, v.decode("latin-1")] for k, v in headers]).encode()


def decode_headers(raw: bytes | None) -> list[tuple[str, bytes]]:
    """The inverse of ``encode_headers``."""
    if not raw:
        return []
    return [(k, v.encode("latin-1")) for k, v in json.loads(raw)]


def lane_lock_key(lane: UUID) -> int:
    """The advisory lock that says a lane's process is alive (64 bits of its uuid)."""
    return int.from_bytes(lane.bytes[:8], "big", signed=True)


async def append(conn: Conn, *, lane: UUID, seqs: Sequence[int], records: Sequence[Record]) -> None:
    """Insert records in one statement (the caller commits: a group commit, or the
    transaction of the change the record announces)."""
    await conn.execute(
        _INSERT,
        (
            lane,
            list(seqs),
            [r.topic for r in records],
            [r.key for r in records],
            [r.value for r in records],
            [encode_headers(r.headers) for r in records],
        ),
        prepare=True,
    )


async def read(conn: Conn, *, lane: UUID, seqs: Sequence[int]) -> list[Any]:
    """The rows of these seqs that still exist, in seq order (for producing them again)."""
    cur = await conn.execute(
        "SELECT seq, topic, key, value, headers FROM journal"
        " WHERE lane = %s AND seq = ANY(%s) ORDER BY seq",
        (lane, list(seqs)),
    )
    return await cur.fetchall()


async def seqs_of(conn: Conn, *, lane: UUID) -> list[int]:
    """Every seq a lane still holds, in order."""
    cur = await conn.execute("SELECT seq FROM journal WHERE lane = %s ORDER BY seq", (lane,))
    return [r["seq"] for r in await cur.fetchall()]


async def delete(conn: Conn, *, lane: UUID, seqs: Sequence[int]) -> int:
    """Forget records the pipeline has carried to their end; returns how many went."""
    cur = await conn.execute(
        "DELETE FROM journal WHERE lane = %s AND seq = ANY(%s)", (lane, list(seqs))
    )
    return cur.rowcount


async def lanes(conn: Conn) -> list[UUID]:
    """Every lane that holds records."""
    cur = await conn.execute("SELECT DISTINCT lane FROM journal")
    return [r["lane"] for r in await cur.fetchall()]


async def try_hold(conn: Conn, lane: UUID) -> bool:
    """Take a lane's advisory lock on this session (False: its process is alive)."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS held", (lane_lock_key(lane),))
    row = await cur.fetchone()
    return bool(row and row["held"])


async def release(conn: Conn, lane: UUID) -> None:
    """Let a lane go (it holds nothing any more)."""
    await conn.execute("SELECT pg_advisory_unlock(%s)", (lane_lock_key(lane),))


async def size(conn: Conn) -> int:
    """How many records the journal holds (tests, metrics)."""
    cur = await conn.execute("SELECT count(*) AS n FROM journal")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0
