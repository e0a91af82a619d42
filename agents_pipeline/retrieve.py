"""retrieve: the knowledge an agent version may use, found for one message.

The knowledge layer sits behind ``Retriever`` (``NoKnowledge`` finds nothing).
A search that fails (the embedder down or unknown, a bad answer, a search error)
never stops the message: it goes on without knowledge, and ``retrieval_error`` on
the event (kept on the agent run) says why. Only the database being away is left
to the stage's retries, since every stage waits for it alike.
"""

from __future__ import annotations

import logging
from typing import Protocol
from uuid import UUID

import psycopg

from agents_pipeline.errors import PipelineError
from streams.contracts import ResolvedMessage, RetrievedChunk, RetrievedMessage

DEFAULT_K = 5
MAX_ERROR_CHARS = 500

log = logging.getLogger(__name__)


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
    """Attach the top-k chunks of the version's knowledge bases to the message (none, with
    the reason, when the search fails)."""
    chunks: list[RetrievedChunk] = []
    error: str | None = None
    if msg.knowledge_base_ids and msg.text:
        try:
            chunks = await retriever.search(
                workspace_id=msg.workspace_id,
                knowledge_base_ids=msg.knowledge_base_ids,
                query=msg.text,
                k=k,
            )
        except psycopg.OperationalError:
            raise  # the database is away: transient, the stage retries
        except Exception as exc:  # the customer still gets an answer, without knowledge
            error = describe_failure(exc)
            log.warning("retrieve: answering without knowledge (trace %s): %s", msg.trace_id, error)
    return RetrievedMessage(**msg.model_dump(), chunks=chunks, retrieval_error=error)


def describe_failure(exc: BaseException) -> str:
    """``code: message`` of a stage error, ``Type: message`` otherwise; one line, bounded."""
    if isinstance(exc, PipelineError) and exc.code:
        text = f"{exc.code}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
