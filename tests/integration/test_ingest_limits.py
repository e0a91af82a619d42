"""A pathological document ends ``failed`` with the reason, on a worker that goes on working.

The worker here has a low extraction CPU limit (``OMNICHAT_EXTRACT_CPU_SECONDS``). The
document is a PDF of one page with 150,000 text lines, whose extraction costs pypdf the
square of its lines (~25 s of CPU here): a child process burns it, not the worker, and the
kernel ends the child at the limit. Meanwhile a normal document uploaded alongside is
ingested and customers' messages are answered.
"""

from __future__ import annotations

import io
import uuid

import aiohttp
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Gateway, Stack, Tenant, wait_until
from tests.integration.helpers import WorkerProcess, create_channel
from tests.integration.test_knowledge import new_kb, upload, wait_doc
from tests.integration.test_pipeline import make_agent, out_messages
from tests.unit.agents_pipeline.knowledge.test_sandbox import slow_pdf

CPU_SECONDS = 8


async def upload_file(
    gw: Gateway, t: Tenant, kb: str, filename: str, data: bytes
) -> tuple[int, dict]:
    """A multipart upload of a large file (aiohttp wants a file object past 1 MiB)."""
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=filename)
    async with gw.http.post(
        f"{gw.url}/api/v1/rag/knowledge-bases/{kb}/documents",
        data=form,
        headers={"Authorization": f"Bearer {t.key}", "X-Workspace-ID": t.id},
    ) as r:
        return r.status, await r.json()


async def _document(pool: AsyncConnectionPool, doc_id: str) -> dict:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, error, attempts, updated_at FROM documents WHERE id = %s",
            (uuid.UUID(doc_id),),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def test_a_document_over_the_cpu_limit_fails_while_the_worker_goes_on(
    gateway: Gateway,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    worker: WorkerProcess,
    stack: Stack,
) -> None:
    kb = await new_kb(gateway, tenant, "limites")
    agent_id = await make_agent(pool, tenant.id, model="offline")
    channel = await create_channel(gateway, tenant, "sandbox", {}, agent_id=agent_id)
    worker.stop()  # the session's worker makes room for one with a low CPU limit
    limited = WorkerProcess(
        worker.settings,
        stack.tmp / "worker-ingest-limits.log",
        worker_id=worker.worker_id,
        extra_env={
            "OMNICHAT_EXTRACT_CPU_SECONDS": str(CPU_SECONDS),
            "OMNICHAT_EXTRACT_TIMEOUT_SECONDS": "300",
        },
    )
    limited.start()
    try:
        status, slow = await upload_file(gateway, tenant, kb, "lento.pdf", slow_pdf(150_000))
        assert status == 202, slow
        status, normal = await upload(
            gateway, tenant, kb, "horarios.txt", "Abrimos às 6h e fechamos às 20h.".encode()
        )
        assert status == 202, normal

        async def extracting() -> bool:
            return (await _document(pool, slow["id"]))["status"] == "processing"

        await wait_until(extracting, timeout=120, interval=0.2)
        for n in range(3):
            status, _ = await gateway.call(
                "POST",
                f"/api/v1/webhooks/sandbox/{channel['id']}",
                key=tenant.key,
                workspace=tenant.id,
                json={"from": f"cliente-{n}", "text": "Que horas vocês abrem?"},
            )
            assert status == 200

        async def answered() -> list[dict]:
            rows = await out_messages(pool, channel["id"])
            return rows if len(rows) == 3 and all(r["status"] == "sent" for r in rows) else []

        replies = await wait_until(answered, timeout=120, interval=0.2)
        done = await wait_doc(gateway, tenant, kb, slow["id"])
        assert done["status"] == "failed" and done["chunks"] == 0, done
        assert done["error"] == f"extraction_limit: used over {CPU_SECONDS} s of CPU time"
        assert (await wait_doc(gateway, tenant, kb, normal["id"]))["status"] == "ready"
        failed = await _document(pool, slow["id"])
        assert failed["attempts"] == 1  # failed with its reason: not retried
        # The replies went out while the child was still burning its CPU limit.
        assert max(r["created_at"] for r in replies) < failed["updated_at"]
    finally:
        limited.stop()
        worker.start()
