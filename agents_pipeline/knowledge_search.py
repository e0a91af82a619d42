"""The knowledge layer the retrieve stage and the search API ask: hybrid search over
a workspace's knowledge bases, each queried with its own embedder and language."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from agents_pipeline.embeddings import Embedder, EmbeddingError, fusion_weights
from storage import knowledge
from streams.contracts import RetrievedChunk


class KnowledgeSearch:
    """A ``Retriever`` on PostgreSQL: pgvector HNSW + full-text, fused with weighted RRF
    (weights from the embedder and the knowledge base's language: ``fusion_weights``)."""

    def __init__(
        self, pool: AsyncConnectionPool, embedder_for: Callable[[str, str], Embedder]
    ) -> None:
        self.pool = pool
        self.embedder_for = embedder_for

    async def search(
        self,
        *,
        workspace_id: UUID,
        knowledge_base_ids: list[UUID],
        query: str,
        k: int,
        mode: str = "hybrid",
    ) -> list[RetrievedChunk]:
        """Top-k chunks of these knowledge bases (only the workspace's own are searched)."""
        async with self.pool.connection() as conn:
            kbs = await knowledge.get_kbs(
                conn, workspace_id=workspace_id, kb_ids=knowledge_base_ids
            )
        groups: dict[tuple[str, str, str, int], list[UUID]] = {}
        for kb in kbs:
            key = (kb["embedding"], kb["embedding_model"], kb["language"], kb["dimensions"])
            groups.setdefault(key, []).append(kb["id"])
        found: list[RetrievedChunk] = []
        for (name, model, language, dims), ids in groups.items():
            vector = None
            weights = 1.0, 1.0
            if mode != "text":
                embedder = self.embedder_for(name, model)
                weights = fusion_weights(embedder, language)
                vector = await embedder.embed_query(query)
                if len(vector) != dims:
                    raise EmbeddingError(
                        "dimension_mismatch",
                        f"the query was embedded in {len(vector)} dimensions but the knowledge "
                        f"base stores {dims}",
                    )
            async with self.pool.connection() as conn, conn.transaction():
                rows = await knowledge.hybrid_search(
                    conn,
                    workspace_id=workspace_id,
                    kb_ids=ids,
                    query_vector=vector,
                    query_text=query,
                    language=language,
                    k=k,
                    mode=mode,
                    vector_weight=weights[0],
                    text_weight=weights[1],
                )
            found += [RetrievedChunk.model_validate(r) for r in rows]
        found.sort(key=lambda c: c.score, reverse=True)
        return found[:k]


def embedder_factory(settings: object) -> Callable[[str, str], Embedder]:
    """``(name, model) -> Embedder`` for knowledge bases: the process-wide instances."""
    from agents_pipeline.embeddings import embedder_from_settings, get_embedder

    def embedder_for(name: str, model: str) -> Embedder:
        if name == "openai":
            embedder = embedder_from_settings(name, settings)
            if embedder.model != model:
                raise EmbeddingError(
                    "model_mismatch",
                    f"this knowledge base was embedded with {model!r}, but the configured "
                    f"endpoint model is {embedder.model!r}",
                )
            return embedder
        return get_embedder(name, model=model)

    return embedder_for
