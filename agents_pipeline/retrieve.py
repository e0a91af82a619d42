"""retrieve: the knowledge an agent version may use, found for one message.

The knowledge layer sits behind ``Retriever``; until knowledge bases are
searchable, ``NoKnowledge`` finds nothing and the stage passes an empty context.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from streams.contracts import ResolvedMessage, RetrievedChunk, RetrievedMessage

DEFAULT_K = 5


class Retriever(Protocol):
    """Finds the top-k passages of some knowledge bases of a workspace, best first."""

    async def search(
        self, *, workspace_id: UUID, knowledge_base_ids: list[UUID], query: str, k: int
    ) -> list[RetrievedChunk]:
        """Search; the workspace filter is part of the query, never applied after it."""
        ...


class NoKnowledge:
    """A retriever with no knowledge: the agent answers from its prompt alone."""

    async def search(
        self, *, workspace_id: UUID, knowledge_base_ids: list[UUID], query: str, k: int
    ) -> list[RetrievedChunk]:
        """Nothing."""
        return []


async def retrieve(
    msg: ResolvedMessage, *, retriever: Retriever, k: int = DEFAULT_K
) -> RetrievedMessage:
    """Attach the top-k chunks of the version's knowledge bases to the message."""
    chunks: list[RetrievedChunk] = []
    if msg.knowledge_base_ids and msg.text:
        chunks = await retriever.search(
            workspace_id=msg.workspace_id,
            knowledge_base_ids=msg.knowledge_base_ids,
            query=msg.text,
            k=k,
        )
    return RetrievedMessage(**msg.model_dump(), chunks=chunks)
