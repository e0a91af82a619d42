"""Document ingestion: extract (in a child with limits) → chunk by structure → embed in
batches → write atomically.

A document's chunks and its ``ready`` status are written in one transaction, so a
worker that dies mid-document leaves nothing of it searchable; the document stays
``processing`` and is taken again (by its event's replay or the worker's sweep) once the
dead worker's lease on it has run out. Bad input — empty, corrupt, encrypted, oversized,
unsupported, only whitespace, or past the extraction limits — ends as ``failed`` with the
reason, never as a crashed or frozen worker.

Claims (storage.knowledge): a worker claims a document for ``lease_seconds`` and renews the
lease while it works; nobody else takes it meanwhile (a second event for it waits until
the holder is done or its lease runs out). Each claim counts as an attempt unless it ends
with an outcome or a transient failure; at ``max_attempts`` the document is failed with
``attempts_exceeded``, so a document that kills or freezes workers is tried a few times,
not for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID, uuid4

import psycopg
from psycopg_pool import AsyncConnectionPool

from agents_pipeline.embeddings import Embedder, EmbeddingError, check_vector_dimensions
from agents_pipeline.knowledge.chunking import chunk
from agents_pipeline.knowledge.extract import ExtractedDocument, ExtractionError, extract
from storage import knowledge
from streams.retry import DATA_ERRORS

log = logging.getLogger(__name__)

CHUNK_TOKENS = 200
OVERLAP_TOKENS = 30
MODEL_MARGIN = 0.9  # keep chunks under 90% of the model's window in its own tokens
# A claim given back after a retriable failure (the embeddings endpoint, no child process)
# may be taken again after this long: by the sweep, as before leases.
RETRY_AFTER = 120.0
HELD_POLL_MIN = 0.5  # seconds between looks at a document another worker holds, at least
# Failures that say nothing about the document: its claim is given back, not counted.
TRANSIENT = (psycopg.OperationalError, OSError, TimeoutError)
_CLAIMANT = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class IngestOutcome:
    """What happened to one document."""

    status: str  # ready | failed | skipped
    chunks: int = 0
    error: str | None = None


@dataclass(frozen=True)
class ClaimPolicy:
    """How documents are claimed (settings ``OMNICHAT_INGEST_*``)."""

    lease_seconds: float = knowledge.DEFAULT_LEASE_SECONDS
    max_attempts: int = 3


class Extractor(Protocol):
    """Where extraction runs: ``knowledge.sandbox.ExtractionPool`` in a worker."""

    async def extract(
        self, data: bytes, *, filename: str | None, mime_type: str | None
    ) -> ExtractedDocument:
        """The document's blocks; any problem with it is an ``ExtractionError``."""
        ...


def chunk_document(
    doc: ExtractedDocument, *, embedder: Embedder, max_tokens: int = CHUNK_TOKENS
) -> list[dict]:
    """Chunk an extracted document for ``embedder`` (CPU only: runs in a thread)."""
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


def plan_chunks(
    data: bytes,
    *,
    filename: str | None,
    mime_type: str | None,
    embedder: Embedder,
    max_tokens: int = CHUNK_TOKENS,
) -> list[dict]:
    """Extract in this process and chunk (benchmarks and tools); raises ExtractionError."""
    doc = extract(data, filename=filename, mime_type=mime_type)
    return chunk_document(doc, embedder=embedder, max_tokens=max_tokens)


async def ingest_document(
    pool: AsyncConnectionPool,
    doc_id: UUID,
    *,
    embedder_for: Callable[[str, str], Embedder],
    extractor: Extractor,
    policy: ClaimPolicy | None = None,
) -> IngestOutcome:
    """Ingest one document if it still waits; ``embedder_for(name, model)`` gives the
    knowledge base's embedder."""
    policy = policy or ClaimPolicy()
    claimant = f"{_CLAIMANT}:{uuid4().hex[:12]}"
    claimed = await _claim(pool, doc_id, claimant, policy)
    if isinstance(claimed, IngestOutcome):
        return claimed
    doc = claimed
    renewing = asyncio.create_task(_keep_lease(pool, doc_id, claimant, policy.lease_seconds))
    try:
        try:
            embedder = embedder_for(doc["embedding"], doc["embedding_model"])
            extracted = await extractor.extract(
                bytes(doc["content"] or b""), filename=doc["filename"], mime_type=doc["mime_type"]
            )
            planned = await asyncio.to_thread(chunk_document, extracted, embedder=embedder)
            vectors = await embedder.embed_passages([c["text"] for c in planned])
            check_vector_dimensions(vectors, doc["dimensions"], f"embedder {embedder.model}")
        finally:
            renewing.cancel()
    except (ExtractionError, EmbeddingError) as exc:
        if exc.retriable:  # the endpoint or the machine, not the document: retried later
            await _release(pool, doc_id, claimant, retry_after=RETRY_AFTER, counted=False)
            raise
        error = f"{exc.code}: {exc.message}"
        async with pool.connection() as conn:
            await knowledge.fail_document(conn, doc_id=doc_id, error=error, claimant=claimant)
        return IngestOutcome("failed", error=error)
    except (*TRANSIENT, asyncio.CancelledError):
        await _release(pool, doc_id, claimant, retry_after=0, counted=False)
        raise
    except Exception:  # a bug: retried later, and counted, so that it ends at max_attempts
        await _release(pool, doc_id, claimant, retry_after=RETRY_AFTER, counted=True)
        raise
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


async def _claim(
    pool: AsyncConnectionPool, doc_id: UUID, claimant: str, policy: ClaimPolicy
) -> dict | IngestOutcome:
    """The claimed document, or the outcome without one: failed past ``max_attempts``,
    skipped when it is no longer waiting. While another worker holds it, wait: it ends it,
    or its lease runs out (it died) and the claim succeeds."""
    while True:
        async with pool.connection() as conn:
            doc = await knowledge.claim_document(
                conn,
                doc_id=doc_id,
                claimant=claimant,
                lease_seconds=policy.lease_seconds,
                max_attempts=policy.max_attempts,
            )
            if doc is not None:
                return doc
            error = await knowledge.give_up_document(
                conn, doc_id=doc_id, max_attempts=policy.max_attempts
            )
            if error is not None:
                log.warning("document %s failed: %s", doc_id, error)
                return IngestOutcome("failed", error=error)
            left = await knowledge.lease_left(conn, doc_id=doc_id)
        if left is None:
            return IngestOutcome("skipped")
        await asyncio.sleep(min(max(left, HELD_POLL_MIN), policy.lease_seconds / 3))


async def _keep_lease(
    pool: AsyncConnectionPool, doc_id: UUID, claimant: str, lease_seconds: float
) -> None:
    """Renew the claim every third of its lease while the document is being worked on."""
    while True:
        await asyncio.sleep(lease_seconds / 3)
        try:
            async with pool.connection() as conn:
                if not await knowledge.renew_lease(
                    conn, doc_id=doc_id, claimant=claimant, lease_seconds=lease_seconds
                ):
                    log.warning(
                        "document %s: the claim on it is lost; its result won't count", doc_id
                    )
                    return
        except psycopg.Error as exc:  # the lease may run out; the claim is checked at the end
            log.warning("document %s: lease not renewed: %s", doc_id, exc)


async def _release(
    pool: AsyncConnectionPool, doc_id: UUID, claimant: str, *, retry_after: float, counted: bool
) -> None:
    """Give the claim back (best effort: with the database away, the lease runs out)."""
    with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
        async with asyncio.timeout(5):
            async with pool.connection() as conn:
                await knowledge.release_document(
                    conn, doc_id=doc_id, claimant=claimant, retry_after=retry_after, counted=counted
                )
