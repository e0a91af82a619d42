"""Claims on documents: a lease nobody else takes, an attempts cap, and a sweep that waits.

Runs ``agents_pipeline.ingest`` against the session's PostgreSQL, with a real extraction
pool and the local embedder, outside any worker: "a worker that died" is a claim whose
lease is made to run out, "a second worker" is a second claimant.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from agents_pipeline.ingest import ClaimPolicy, ingest_document
from agents_pipeline.knowledge import ExtractionError
from agents_pipeline.knowledge.sandbox import ExtractionLimits, ExtractionPool
from agents_pipeline.knowledge_search import embedder_factory
from omnichat.settings import Settings
from storage import knowledge
from tests.conftest import Gateway, Tenant
from tests.integration.test_knowledge import new_kb

TEXT = "Entregamos em todo o bairro em até 40 minutos, com taxa de 5 reais."


@pytest_asyncio.fixture(loop_scope="session")
async def extractor() -> AsyncIterator[ExtractionPool]:
    """Extraction children for the test."""
    pool = ExtractionPool(ExtractionLimits(processes=1))
    yield pool
    await pool.close()


async def _add(pool: AsyncConnectionPool, tenant: Tenant, kb: str, text: str = TEXT) -> uuid.UUID:
    async with pool.connection() as conn:
        row, created = await knowledge.add_document(
            conn,
            workspace_id=uuid.UUID(tenant.id),
            kb_id=uuid.UUID(kb),
            title="Entrega",
            filename="entrega.txt",
            mime_type="text/plain",
            content=text.encode(),
            content_hash=hashlib.sha256(f"{kb}{text}{uuid.uuid4()}".encode()).hexdigest(),
        )
    assert created
    return row["id"]


async def _row(pool: AsyncConnectionPool, doc_id: uuid.UUID) -> dict:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, error, attempts, claimed_by, lease_until, content IS NULL AS dropped,"
            " chunk_count FROM documents WHERE id = %s",
            (doc_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def _run_out(pool: AsyncConnectionPool, doc_id: uuid.UUID) -> None:
    """The holder died: its lease runs out (and, for the sweep, it is long past)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE documents SET lease_until = now() - interval '1 second' WHERE id = %s",
            (doc_id,),
        )


async def _swept(pool: AsyncConnectionPool) -> set[uuid.UUID]:
    async with pool.connection() as conn:
        return {r["id"] for r in await knowledge.pending_documents(conn, older_than_seconds=60)}


async def test_a_held_document_is_neither_swept_nor_taken_until_its_lease_runs_out(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    kb = await new_kb(gateway, tenant, "leases")
    doc_id = await _add(pool, tenant, kb)
    async with pool.connection() as conn:
        first = await knowledge.claim_document(conn, doc_id=doc_id, claimant="a", lease_seconds=30)
        assert first is not None and first["claimed_by"] == "a"
        # An old update time made the sweep take any processing document before leases.
        await conn.execute("ALTER TABLE documents DISABLE TRIGGER documents_updated_at")
        await conn.execute(
            "UPDATE documents SET updated_at = now() - interval '1 hour' WHERE id = %s", (doc_id,)
        )
        await conn.execute("ALTER TABLE documents ENABLE TRIGGER documents_updated_at")
        assert await knowledge.claim_document(conn, doc_id=doc_id, claimant="b") is None
        left = await knowledge.lease_left(conn, doc_id=doc_id)
        assert left is not None and 25 < left <= 30
        assert await knowledge.renew_lease(conn, doc_id=doc_id, claimant="a", lease_seconds=30)
        assert not await knowledge.renew_lease(conn, doc_id=doc_id, claimant="b", lease_seconds=30)
    assert doc_id not in await _swept(pool)

    await _run_out(pool, doc_id)
    assert doc_id in await _swept(pool)
    async with pool.connection() as conn:
        second = await knowledge.claim_document(conn, doc_id=doc_id, claimant="b")
        assert second is not None and second["attempts"] == 2
        # The first holder woke up: it can neither fail nor finish what "b" holds now.
        await knowledge.fail_document(conn, doc_id=doc_id, error="corrupt: x", claimant="a")
        chunk = {"position": 0, "text": TEXT, "tokens": 20, "embedding": [0.1] * 384}
        assert not await knowledge.finish_document(conn, doc=first, chunks=[chunk])
        assert await knowledge.finish_document(conn, doc=second, chunks=[chunk])
    row = await _row(pool, doc_id)
    assert row["status"] == "ready" and row["chunk_count"] == 1 and row["lease_until"] is None
    assert doc_id not in await _swept(pool)


async def test_a_document_whose_workers_keep_dying_fails_at_the_attempts_cap(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    settings: Settings,
    extractor: ExtractionPool,
) -> None:
    kb = await new_kb(gateway, tenant, "attempts")
    doc_id = await _add(pool, tenant, kb)
    policy = ClaimPolicy(lease_seconds=30, max_attempts=3)
    for n in range(1, 4):  # three workers took it and died
        async with pool.connection() as conn:
            claimed = await knowledge.claim_document(
                conn, doc_id=doc_id, claimant=f"w{n}", max_attempts=policy.max_attempts
            )
        assert claimed is not None and claimed["attempts"] == n
        await _run_out(pool, doc_id)
    assert doc_id in await _swept(pool)  # the sweep queues it once more: to fail it
    outcome = await ingest_document(
        pool,
        doc_id,
        embedder_for=embedder_factory(settings),
        extractor=extractor,
        policy=policy,
    )
    assert outcome.status == "failed"
    assert outcome.error == (
        "attempts_exceeded: ingestion started 3 times without finishing"
        " (a worker died, froze or failed on it each time)"
    )
    row = await _row(pool, doc_id)
    assert row["status"] == "failed" and row["error"] == outcome.error and row["dropped"]
    assert doc_id not in await _swept(pool)
    again = await ingest_document(
        pool, doc_id, embedder_for=embedder_factory(settings), extractor=extractor, policy=policy
    )
    assert again.status == "skipped"


async def test_an_event_for_a_held_document_waits_for_the_lease(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    settings: Settings,
    extractor: ExtractionPool,
) -> None:
    kb = await new_kb(gateway, tenant, "waits")
    doc_id = await _add(pool, tenant, kb)
    async with pool.connection() as conn:  # a worker took it, with a short lease, and died
        assert await knowledge.claim_document(conn, doc_id=doc_id, lease_seconds=2) is not None
    outcome = await ingest_document(
        pool,
        doc_id,
        embedder_for=embedder_factory(settings),
        extractor=extractor,
        policy=ClaimPolicy(lease_seconds=30, max_attempts=3),
    )
    assert outcome.status == "ready" and outcome.chunks == 1
    row = await _row(pool, doc_id)
    assert row["status"] == "ready" and row["attempts"] == 2


async def test_a_transient_failure_gives_the_claim_back_uncounted(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, settings: Settings
) -> None:
    kb = await new_kb(gateway, tenant, "transient")
    doc_id = await _add(pool, tenant, kb)
    closed = ExtractionPool(ExtractionLimits(processes=1))
    await closed.close()  # no child can be started: the machine's problem, not the document's
    with pytest.raises(ExtractionError) as caught:
        await ingest_document(
            pool, doc_id, embedder_for=embedder_factory(settings), extractor=closed
        )
    assert caught.value.retriable
    row = await _row(pool, doc_id)
    assert row["status"] == "processing" and row["attempts"] == 0 and row["claimed_by"] is None
    assert doc_id not in await _swept(pool)  # it waits out the retry delay first
    async with pool.connection() as conn:
        left = await knowledge.lease_left(conn, doc_id=doc_id)
    assert left is not None and left > 60
