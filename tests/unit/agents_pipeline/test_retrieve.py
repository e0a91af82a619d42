"""retrieve: a failing search answers without knowledge and says why; the database away
is left to the stage's retries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from agents_pipeline.embeddings import EmbeddingError
from agents_pipeline.retrieve import MAX_ERROR_CHARS, describe_failure, retrieve
from streams.contracts import ResolvedMessage, RetrievedChunk

CHUNK = RetrievedChunk(
    chunk_id=uuid.uuid4(),
    document_id=uuid.uuid4(),
    document_title="Horários",
    text="Abrimos às 7h.",
    score=0.9,
    position=0,
)


def message(text: str | None = "Que horas abre?", kbs: int = 1) -> ResolvedMessage:
    """A resolved message bound to ``kbs`` knowledge bases."""
    return ResolvedMessage(
        trace_id="t",
        workspace_id=uuid.uuid4(),
        channel_id=uuid.uuid4(),
        provider="sandbox",
        contact_id=uuid.uuid4(),
        contact_external_id="ana",
        conversation_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        text=text,
        type="text",
        agent_id=uuid.uuid4(),
        agent_version_id=uuid.uuid4(),
        knowledge_base_ids=[uuid.uuid4() for _ in range(kbs)],
        received_at=datetime.now(UTC),
    )


class Retriever:
    """Finds CHUNK, or raises what it is given."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    async def search(self, **_: object) -> list[RetrievedChunk]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return [CHUNK]


async def test_the_search_result_is_attached() -> None:
    found = await retrieve(message(), retriever=Retriever())
    assert found.chunks == [CHUNK] and found.retrieval_error is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            EmbeddingError("unknown_model", "the multilingual embedder ships [...], not 'x'"),
            "unknown_model: the multilingual embedder ships [...], not 'x'",
        ),
        (EmbeddingError("http_500", "down", retriable=True), "http_500: down"),
        (psycopg.errors.DataError("different vector dimensions"), "DataError: different"),
        (RuntimeError("boom\nwith lines"), "RuntimeError: boom with lines"),
    ],
)
async def test_a_failing_search_answers_without_knowledge(error: Exception, expected: str) -> None:
    msg = message()
    found = await retrieve(msg, retriever=Retriever(error))
    assert found.chunks == []
    assert found.retrieval_error is not None and found.retrieval_error.startswith(expected)
    assert found.message_id == msg.message_id and found.text == msg.text


async def test_the_database_away_is_left_to_the_stage() -> None:
    with pytest.raises(psycopg.OperationalError):
        await retrieve(message(), retriever=Retriever(psycopg.OperationalError("gone")))


@pytest.mark.parametrize(("text", "kbs"), [(None, 1), ("", 1), ("Oi", 0)])
async def test_nothing_to_search_asks_nothing(text: str | None, kbs: int) -> None:
    retriever = Retriever(RuntimeError("must not be called"))
    found = await retrieve(message(text, kbs), retriever=retriever)
    assert retriever.calls == 0 and found.chunks == [] and found.retrieval_error is None


def test_a_long_failure_is_cut() -> None:
    text = describe_failure(RuntimeError("x" * 5000))
    assert len(text) == MAX_ERROR_CHARS and text.endswith("...")
