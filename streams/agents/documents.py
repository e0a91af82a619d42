"""Agent on ``documents.ingest``: extract, chunk, embed and index one document at a time.

Documents are independent, so the agent runs a few at once: while one is extracted or
written, the embedder's threads (one per core, fed from every document's chunks) encode
the others' chunks. The next document starts as soon as one ends (``windowed_agent``):
batches of documents left both threads waiting at each batch's tail. A timer re-queues
documents left waiting (an event that never made it to the topic, a worker that died
mid-document).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from agents_pipeline.ingest import ingest_document
from agents_pipeline.knowledge_search import embedder_factory
from storage import knowledge
from streams.agents.stage import Out, windowed_agent
from streams.contracts import DocumentIngest

if TYPE_CHECKING:
    from streams.app import OmnichatApp

log = logging.getLogger(__name__)

SWEEP_EVERY = 30.0
STUCK_AFTER = 120.0  # seconds a document may wait before the sweep queues it again
# Documents being extracted, embedded or written at once (each up to 20 MB in memory).
IN_FLIGHT = 4


def register(app: OmnichatApp) -> None:
    """Add the ingestion agent and its sweep."""
    t = app.topics_
    m = app.metrics
    embedder_for = embedder_factory(app.settings)

    async def on_document(ev: DocumentIngest) -> list[Out]:
        pool = await app.resources.pool()
        started = time.perf_counter()
        outcome = await ingest_document(pool, ev.document_id, embedder_for=embedder_for)
        m.documents.labels(outcome.status).inc()
        m.chunks_indexed.inc(outcome.chunks)
        m.ingest_latency.observe(time.perf_counter() - started)
        return []

    windowed_agent(
        app,
        name="ingest",
        topic=t.documents,
        model=DocumentIngest,
        handle=on_document,
        in_flight=IN_FLIGHT,
    )

    @app.timer(SWEEP_EVERY)
    async def sweep() -> None:
        """Queue documents that have waited too long."""
        pool = await app.resources.pool()
        async with pool.connection() as conn:
            stuck = await knowledge.pending_documents(conn, older_than_seconds=STUCK_AFTER)
        for row in stuck:
            ev = DocumentIngest(
                trace_id=row["id"].hex,
                document_id=row["id"],
                workspace_id=row["workspace_id"],
                knowledge_base_id=row["knowledge_base_id"],
            )
            await t.documents.send(key=str(row["id"]).encode(), value=ev.model_dump_json().encode())
        if stuck:
            log.info("ingest sweep queued %d waiting documents", len(stuck))
