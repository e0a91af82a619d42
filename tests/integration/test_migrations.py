"""Migrations: from empty, twice, and from two runners at once."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from storage.migrate import load_migrations, migrate
from tests.conftest import Stack


def _db_url(stack: Stack, name: str) -> str:
    return stack.postgres.url.replace("/postgres?", f"/{name}?")


async def test_from_empty_twice_and_concurrently(stack: Stack) -> None:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(stack.postgres.url, autocommit=True) as c:
        await c.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(stack, name)
    first, second = await asyncio.gather(migrate(url), migrate(url))
    assert sorted([first, second]) == [[], [m.version for m in load_migrations()]]
    assert await migrate(url) == []
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        tables = {r[0] for r in await cur.fetchall()}
        cur = await conn.execute("SELECT count(*) FROM schema_migrations")
        assert (await cur.fetchone())[0] == len(load_migrations())
    expected = {
        "workspaces",
        "memberships",
        "api_keys",
        "channels",
        "contacts",
        "conversations",
        "messages",
        "agents",
        "agent_versions",
        "agent_runs",
        "knowledge_bases",
        "documents",
        "chunks",
        "webhook_events",
        "usage_records",
        "plans",
        "quotas",
        "audit_log",
    }
    assert expected <= tables


async def test_every_workspace_row_has_an_indexed_fk(migrated: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated) as conn:
        cur = await conn.execute(
            "SELECT c.table_name FROM information_schema.columns c"
            " WHERE c.column_name = 'workspace_id' AND c.table_schema = 'public'"
        )
        owned = {r[0] for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT tc.table_name FROM information_schema.table_constraints tc"
            " JOIN information_schema.key_column_usage k ON k.constraint_name = tc.constraint_name"
            " WHERE tc.constraint_type = 'FOREIGN KEY' AND k.column_name = 'workspace_id'"
        )
        with_fk = {r[0] for r in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
        indexed = {t for t, d in await cur.fetchall() if "(workspace_id" in d}
    assert len(owned) >= 15
    assert owned == with_fk
    assert owned <= indexed
