"""The PostgreSQL connection pool: one per process, opened and closed by its owner."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

Conn = AsyncConnection[dict]


async def _configure(conn: AsyncConnection) -> None:
    """Per-connection setup: UTC, and the pgvector type when the extension exists."""
    await conn.execute("SET TIME ZONE 'UTC'")
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
    if await cur.fetchone():
        from pgvector.psycopg import register_vector_async

        await register_vector_async(conn)
    await conn.commit()


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    """Open a pool of autocommit-off connections returning dict rows."""
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        configure=_configure,
        open=False,
        name="omnichat",
    )
    await pool.open(wait=True, timeout=30)
    return pool


@asynccontextmanager
async def pool_context(url: str, **kwargs: int) -> AsyncIterator[AsyncConnectionPool]:
    """``async with`` a pool: the same owner opens and closes it."""
    pool = await open_pool(url, **kwargs)
    try:
        yield pool
    finally:
        await pool.close()
