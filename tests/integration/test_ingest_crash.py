"""A worker killed in the middle of ingestion: nothing half-written is searchable, and every
document ends ready once a worker of the same group is back, with its chunks written once.

The ingestion agent keeps four documents in flight and acks each as it ends
(streams/window.py), so at the kill some documents are written, some are being embedded
or written, and some wait in the topic; acks are out of offset order. The kill lands
between those states on purpose.
"""

from __future__ import annotations

import signal
import uuid

from psycopg_pool import AsyncConnectionPool

from ops.bench.rag_eval import load_documents
from tests.conftest import Gateway, Stack, Tenant, wait_until
from tests.integration.helpers import WorkerProcess
from tests.integration.test_knowledge import new_kb, search, upload

COPIES = 2


async def _states(pool: AsyncConnectionPool, kb: str) -> list[dict]:
    """Each document's status, its recorded chunk count and the chunk rows it really has."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT d.id, d.status, d.chunk_count, d.error,"
            " (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS rows"
            " FROM documents d WHERE d.knowledge_base_id = %s",
            (uuid.UUID(kb),),
        )
        return list(await cur.fetchall())


def _all_or_nothing(states: list[dict]) -> None:
    """A ready document has exactly its chunks; any other has none visible."""
    for s in states:
        if s["status"] == "ready":
            assert s["rows"] == s["chunk_count"] > 0, s
        else:
            assert s["rows"] == 0, s


async def test_a_worker_killed_mid_ingestion_leaves_no_half_document(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    worker: WorkerProcess,
    stack: Stack,
) -> None:
    kb = await new_kb(gateway, tenant, "crash")
    worker.stop()  # the session's worker makes room for one that will be killed
    doomed = WorkerProcess(
        worker.settings, stack.tmp / "worker-ingest-crash.log", worker_id=worker.worker_id
    )
    doomed.start()
    try:
        ids = []
        for n in range(1, COPIES + 1):
            for name, data in load_documents().items():
                stem, _, ext = name.rpartition(".")
                body = data + f"\n\nCópia {n}.\n".encode()
                status, doc = await upload(gateway, tenant, kb, f"{stem}-{n}.{ext}", body)
                assert status == 202, doc
                ids.append(doc["id"])

        async def midway() -> bool:
            states = await _states(pool, kb)
            ready = sum(s["status"] == "ready" for s in states)
            waiting = sum(s["status"] in ("pending", "processing") for s in states)
            return ready >= 2 and waiting >= 6

        await wait_until(midway, timeout=180, interval=0.05)
        doomed.stop(signal.SIGKILL)
        at_kill = await _states(pool, kb)
        _all_or_nothing(at_kill)
        assert any(s["status"] == "processing" for s in at_kill) or any(
            s["status"] == "pending" for s in at_kill
        )
    finally:
        doomed.stop(signal.SIGKILL)
        worker.start()

    async def finished() -> list[dict] | None:
        states = await _states(pool, kb)
        return states if all(s["status"] == "ready" for s in states) else None

    # Well inside the sweep's STUCK_AFTER (120 s from upload): a document lost by the
    # stream must fail this wait, not be rescued by the sweep.
    states = await wait_until(finished, timeout=90, interval=0.5)
    assert len(states) == len(ids)
    _all_or_nothing(states)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, count(DISTINCT (document_id, position)) AS distinct_positions"
            " FROM chunks WHERE knowledge_base_id = %s",
            (uuid.UUID(kb),),
        )
        row = await cur.fetchone()
    assert row is not None and row["n"] == row["distinct_positions"] == sum(
        s["chunk_count"] for s in states
    )
    status, found = await search(gateway, tenant, [kb], "Cópia 2", k=3)
    assert status == 200 and found["items"], found
    assert {i["document_id"] for i in found["items"]} <= set(ids)
