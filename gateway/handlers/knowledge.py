"""Knowledge: /api/v1/rag/. Uploads are stored and queued; ingestion runs in the stream."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from agents_pipeline.embeddings import EmbeddingError
from agents_pipeline.embeddings.local import DEFAULT_MODEL as LOCAL_MODEL
from agents_pipeline.embeddings.local import DIMENSIONS as LOCAL_DIMENSIONS
from agents_pipeline.embeddings.multilingual import DEFAULT_MODEL as E5_MODEL
from agents_pipeline.embeddings.multilingual import DIMENSIONS as E5_DIMENSIONS
from agents_pipeline.knowledge_search import KnowledgeSearch, embedder_factory
from gateway.bodies import pagination, parse_json, path_uuid, read_raw, validate
from gateway.errors import ApiError, not_found
from gateway.producer import BrokerUnavailable
from gateway.responses import listing, no_content, ok
from gateway.services import Services, caller, services
from storage import audit, knowledge
from streams.contracts import DocumentIngest
from streams.topics import DOCUMENTS_INGEST

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
EMBEDDINGS = ("local", "multilingual", "openai")
# The model id and vector size each local embedder loads by default: the id is stored with
# the base and handed back to the embedder, so it must be one the embedder ships.
LOCAL_MODELS = {"local": (LOCAL_MODEL, LOCAL_DIMENSIONS), "multilingual": (E5_MODEL, E5_DIMENSIONS)}
# The vector size of known OpenAI models.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class KnowledgeBaseCreate(BaseModel):
    """POST /api/v1/rag/knowledge-bases."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    language: str = Field(default="pt", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    embedding: str = Field(default="local", pattern=r"^(local|multilingual|openai)$")
    dimensions: int | None = Field(
        default=None, ge=1, le=4096, description="Vector size of an openai model we do not know."
    )


class TextDocument(BaseModel):
    """POST .../documents as JSON."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1)


class SearchBody(BaseModel):
    """POST /api/v1/rag/search."""

    model_config = ConfigDict(extra="forbid")

    knowledge_base_ids: list[UUID] = Field(min_length=1, max_length=20)
    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(default=5, ge=1, le=50)
    mode: str = Field(default="hybrid", pattern=r"^(hybrid|vector|text)$")


def kb_view(row: dict[str, Any]) -> dict[str, Any]:
    """A knowledge base as the API shows it."""
    return {
        k: row[k]
        for k in (
            "id",
            "name",
            "language",
            "embedding",
            "embedding_model",
            "dimensions",
            "created_at",
        )
    }


def doc_view(row: dict[str, Any]) -> dict[str, Any]:
    """A document as the API shows it (``chunks`` is the count)."""
    return {
        "id": row["id"],
        "knowledge_base_id": row["knowledge_base_id"],
        "title": row["title"],
        "filename": row["filename"],
        "status": row["status"],
        "chunks": row["chunk_count"],
        "error": row["error"],
        "size_bytes": row["size_bytes"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _embedder_identity(svc: Services, body: KnowledgeBaseCreate) -> tuple[str, int]:
    if body.embedding in LOCAL_MODELS:
        return LOCAL_MODELS[body.embedding]
    if not (svc.settings.embedding_base_url or svc.settings.embedding_api_key):
        raise ApiError(
            422,
            "embedding_not_configured",
            "the openai embedder needs OMNICHAT_EMBEDDING_BASE_URL or _API_KEY",
        )
    model = svc.settings.embedding_model
    dims = body.dimensions or KNOWN_DIMENSIONS.get(model)
    if dims is None:
        raise ApiError(422, "unknown_dimensions", f"give dimensions for model {model!r}")
    return model, dims


async def create_kb(request: web.Request) -> web.Response:
    """Create a knowledge base; its language and embedder are fixed from now on."""
    svc = services(request)
    who = caller(request)
    body = validate(KnowledgeBaseCreate, parse_json(await read_raw(request, 64 * 1024)))
    model, dims = _embedder_identity(svc, body)
    async with svc.pool.connection() as conn, conn.transaction():
        row = await knowledge.create_kb(
            conn,
            workspace_id=who.workspace_id,
            name=body.name,
            language=body.language,
            embedding=body.embedding,
            embedding_model=model,
            dimensions=dims,
        )
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="knowledge_base.create",
            object_type="knowledge_base",
            object_id=row["id"],
            details={"embedding": body.embedding},
        )
    return ok(kb_view(row), 201)


async def list_kbs(request: web.Request) -> web.Response:
    """The workspace's knowledge bases."""
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        rows, nxt = await knowledge.list_kbs(
            conn, workspace_id=caller(request).workspace_id, limit=limit, cursor=cursor
        )
    return listing([kb_view(r) for r in rows], nxt)


async def _kb(request: web.Request) -> dict[str, Any]:
    kb_id = path_uuid(request, "id", "knowledge base")
    async with services(request).pool.connection() as conn:
        row = await knowledge.get_kb(conn, workspace_id=caller(request).workspace_id, kb_id=kb_id)
    if row is None:
        raise not_found("knowledge base")
    return row


async def get_kb(request: web.Request) -> web.Response:
    """One knowledge base."""
    return ok(kb_view(await _kb(request)))


async def delete_kb(request: web.Request) -> web.Response:
    """Delete a knowledge base with its documents and chunks."""
    who = caller(request)
    kb = await _kb(request)
    async with services(request).pool.connection() as conn, conn.transaction():
        await knowledge.delete_kb(conn, workspace_id=who.workspace_id, kb_id=kb["id"])
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="knowledge_base.delete",
            object_type="knowledge_base",
            object_id=kb["id"],
        )
    return no_content()


async def _upload(request: web.Request) -> tuple[str, str | None, str | None, bytes]:
    """(title, filename, mime type, bytes) from a multipart file or a JSON text."""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        title: str | None = None
        data: bytes | None = None
        filename = mime = None
        async for part in reader:
            if part.name == "title":
                title = (await part.text()).strip() or None
            elif part.name == "file":
                filename = part.filename
                mime = part.headers.get("Content-Type")
                data = bytearray()
                while chunk := await part.read_chunk(65536):
                    data += chunk
                    if len(data) > MAX_DOCUMENT_BYTES:
                        raise ApiError(
                            413,
                            "payload_too_large",
                            f"documents are limited to {MAX_DOCUMENT_BYTES} bytes",
                        )
                data = bytes(data)
        if data is None:
            raise ApiError(422, "validation_error", "a multipart upload needs a 'file' part")
        return title or filename or "document", filename, mime, data
    body = validate(TextDocument, parse_json(await read_raw(request, MAX_DOCUMENT_BYTES)))
    return body.title, f"{body.title}.txt", "text/plain", body.text.encode("utf-8")


async def add_document(request: web.Request) -> web.Response:
    """Store an upload as pending and queue it; identical content is not ingested twice."""
    svc = services(request)
    who = caller(request)
    kb = await _kb(request)
    title, filename, mime, data = await _upload(request)
    digest = hashlib.sha256(data).hexdigest()
    async with svc.pool.connection() as conn, conn.transaction():
        row, created = await knowledge.add_document(
            conn,
            workspace_id=who.workspace_id,
            kb_id=kb["id"],
            title=title[:300],
            filename=filename,
            mime_type=mime,
            content=data,
            content_hash=digest,
        )
        if created:
            await audit.write_audit(
                conn,
                workspace_id=who.workspace_id,
                actor=who.actor,
                action="document.create",
                object_type="document",
                object_id=row["id"],
                details={"filename": filename},
            )
    if not created:
        return ok({**doc_view(row), "duplicate": True}, 200)
    event = DocumentIngest(
        trace_id=digest[:32],
        workspace_id=who.workspace_id,
        knowledge_base_id=kb["id"],
        document_id=row["id"],
    )
    try:
        await svc.producer.send(
            DOCUMENTS_INGEST,
            key=str(row["id"]).encode(),
            value=event.model_dump_json().encode(),
            headers=[],
        )
    except BrokerUnavailable:
        pass  # stored as pending: the worker's sweep queues documents left waiting
    return ok({"id": row["id"], "status": "pending", "title": row["title"]}, 202)


async def list_documents(request: web.Request) -> web.Response:
    """A knowledge base's documents."""
    kb = await _kb(request)
    limit, cursor = pagination(request)
    async with services(request).pool.connection() as conn:
        rows, nxt = await knowledge.list_documents(
            conn,
            workspace_id=caller(request).workspace_id,
            kb_id=kb["id"],
            limit=limit,
            cursor=cursor,
        )
    return listing([doc_view(r) for r in rows], nxt)


async def get_document(request: web.Request) -> web.Response:
    """One document with its status and error."""
    kb = await _kb(request)
    doc_id = path_uuid(request, "doc_id", "document")
    async with services(request).pool.connection() as conn:
        row = await knowledge.get_document(
            conn, workspace_id=caller(request).workspace_id, kb_id=kb["id"], doc_id=doc_id
        )
    if row is None:
        raise not_found("document")
    return ok(doc_view(row))


async def delete_document(request: web.Request) -> web.Response:
    """Delete a document; its chunks stop being searchable at once."""
    who = caller(request)
    kb = await _kb(request)
    doc_id = path_uuid(request, "doc_id", "document")
    async with services(request).pool.connection() as conn, conn.transaction():
        if not await knowledge.delete_document(
            conn, workspace_id=who.workspace_id, kb_id=kb["id"], doc_id=doc_id
        ):
            raise not_found("document")
        await audit.write_audit(
            conn,
            workspace_id=who.workspace_id,
            actor=who.actor,
            action="document.delete",
            object_type="document",
            object_id=doc_id,
        )
    return no_content()


async def search(request: web.Request) -> web.Response:
    """Hybrid search over the workspace's knowledge bases."""
    svc = services(request)
    who = caller(request)
    body = validate(SearchBody, parse_json(await read_raw(request, 64 * 1024)))
    async with svc.pool.connection() as conn:
        kbs = await knowledge.get_kbs(
            conn, workspace_id=who.workspace_id, kb_ids=body.knowledge_base_ids
        )
    if len(kbs) != len(set(body.knowledge_base_ids)):
        raise not_found("knowledge base")
    searcher = KnowledgeSearch(svc.pool, embedder_factory(svc.settings))
    try:
        found = await searcher.search(
            workspace_id=who.workspace_id,
            knowledge_base_ids=body.knowledge_base_ids,
            query=body.query,
            k=body.k,
            mode=body.mode,
        )
    except EmbeddingError as exc:
        status = 503 if exc.retriable else 422
        raise ApiError(status, exc.code or "embedding_error", exc.message) from None
    return ok({"items": [c.model_dump(mode="json") for c in found]})
