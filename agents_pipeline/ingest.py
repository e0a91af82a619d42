"""Document ingestion: extract → chunk by structure → embed in batches → write atomically.

A document's chunks and its ``ready`` status are written in one transaction, so a
worker that dies mid-document leaves nothing of it searchable; the document stays
``processing`` and is taken again (by its event's replay or the worker's sweep).
Bad input — empty, corrupt, encrypted, oversized, unsupported, only whitespace —
ends as ``failed`` with the reason, never as a crashed worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from agents_pipeline.embeddings import Embedder, EmbeddingError, check_vector_dimensions
from agents_pipeline.knowledge.chunking import chunk
from agents_pipeline.knowledge.extract import ExtractionError, extract
from storage import knowledge
from streams.retry import DATA_ERRORS

log = logging.getLogger(__name__)

CHUNK_TOKENS = 200
OVERLAP_TOKENS = 30
MODEL_MARGIN = 0.9  # keep chunks under 90% of the model's window in its own tokens


@dataclass
class IngestOutcome:
    """What happened to one document."""

    status: str  # ready | failed | skipped
    chunks: int = 0
    error: str | None = None


def plan_chunks(
    data: bytes,
    *,
    filename: str | None,
    mime_type: str | None,
    embedder: Embedder,
    max_tokens: int = CHUNK_TOKENS,
) -> list[dict]:
    """Extract and chunk (CPU only: runs in a thread); raises ExtractionError."""
    doc = extract(data, filename=filename, mime_type=mime_type)
    chunks = chunk(
        doc,
        max_tokens=max_tokens,
        overlap_tokens=OVERLAP_TOKENS,
        hard_limit_tokens=int(embedder.max_input_tokens * MODEL_MARGIN),
        model_tokens=embedder.count_model_tokens,
    )
    if not chunks:
        raise ExtractionError("no_text", "the document has no text to index")
    return [
        {
            "position": c.position,
            "text": c.text,
            "tokens": c.tokens,
            "heading": " > ".join(c.heading_path) or None,
        }
        for c in chunks
    ]


async def ingest_document(
    pool: AsyncConnectionPool,
    doc_id: UUID,
    *,
    embedder_for: Callable[[str, str], Embedder],
) -> IngestOutcome:
    """Ingest one document if it still waits; ``embedder_for(name, model)`` gives the
    knowledge base's embedder."""
    async with pool.connection() as conn:
        doc = await knowledge.claim_document(conn, doc_id=doc_id)
    if doc is None:
        return IngestOutcome("skipped")
    try:
        embedder = embedder_for(doc["embedding"], doc["embedding_model"])
        planned = await asyncio.to_thread(
            plan_chunks,
            bytes(doc["content"] or b""),
            filename=doc["filename"],
            mime_type=doc["mime_type"],
            embedder=embedder,
        )
        vectors = await embedder.embed_passages([c["text"] for c in planned])
        check_vector_dimensions(vectors, doc["dimensions"], f"embedder {embedder.model}")
    except (ExtractionError, EmbeddingError) as exc:
        if isinstance(exc, EmbeddingError) and exc.retriable:
            raise  # the endpoint may come back: leave it processing, retried later
        error = f"{exc.code}: {exc.message}"
        async with pool.connection() as conn:
            await knowledge.fail_document(conn, doc_id=doc_id, error=error)
        return IngestOutcome("failed", error=error)
    for c, v in zip(planned, vectors, strict=True):
        c["embedding"] = v
    try:
        async with pool.connection() as conn:
            written = await knowledge.finish_document(conn, doc=doc, chunks=planned)
    except DATA_ERRORS as exc:
        # Text PostgreSQL refuses would be refused on every retry, and the sweep would
        # take the document again forever: it fails, with the reason.
        error = f"unstorable_text: {type(exc).__name__}: {exc}"
        async with pool.connection() as conn:
            await knowledge.fail_document(conn, doc_id=doc_id, error=error)
        return IngestOutcome("failed", error=error)
    return IngestOutcome("ready" if written else "skipped", chunks=len(planned))
