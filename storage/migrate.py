"""Forward-only SQL migrations: numbered files, each applied once in its own transaction.

Safe to run twice and from two processes at once: a session-level advisory
lock serialises runners, and the applied set is read after taking it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_LOCK_KEY = 7_351_902_114  # arbitrary, fixed: the advisory lock of the migration runner


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file, recorded to notice edits of an applied migration."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Every ``NNNN_name.sql`` shipped in ``storage/migrations``, in order."""
    out = []
    for entry in resources.files("storage.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            out.append(Migration(version, rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(out, key=lambda m: m.version)


async def migrate(url: str) -> list[str]:
    """Apply what is not applied yet; return the versions applied by this call."""
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
            done = {row[0]: row[1] for row in await cur.fetchall()}
            for m in load_migrations():
                if m.version in done:
                    if done[m.version] != m.checksum:
                        log.warning("migration %s changed after it was applied", m.version)
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
                log.info("applied migration %s_%s", m.version, m.name)
                applied_now.append(m.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
