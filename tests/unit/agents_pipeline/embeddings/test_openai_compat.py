"""The openai embedder against a real local OpenAI-compatible server: batching, retries, errors."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from agents_pipeline.embeddings import (
    Embedder,
    EmbeddingError,
    check_dimensions,
    close_embedders,
    embedder_from_settings,
    get_embedder,
)
from agents_pipeline.embeddings.openai_compat import OpenAICompatEmbedder
from agents_pipeline.llm.tokens import count_tokens
from tests.fakes.openai_api import FakeOpenAI, fake_embedding

API_KEY = "sk-test"
DIM = 64


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """A fresh fake endpoint per test, so scripts and recorded requests never leak."""
    async with FakeOpenAI(api_key=API_KEY, embedding_dim=DIM) as server:
        yield server


def make_embedder(
    fake: FakeOpenAI, *, api_key: str = API_KEY, **options: object
) -> OpenAICompatEmbedder:
    """An embedder on the fake with tiny backoff, so retry tests stay fast."""
    defaults: dict[str, object] = {
        "timeout": 2.0,
        "max_retries": 3,
        "backoff_base": 0.001,
        "backoff_max": 0.005,
    }
    return OpenAICompatEmbedder(
        base_url=fake.base_url,
        api_key=api_key,
        **(defaults | options),  # type: ignore[arg-type]
    )


def norm(vector: list[float]) -> float:
    """Euclidean length."""
    return math.sqrt(sum(v * v for v in vector))


async def test_300_inputs_go_in_two_calls_and_come_back_in_order(fake: FakeOpenAI) -> None:
    texts = [f"pergunta número {i} sobre o horário da loja" for i in range(300)]
    async with make_embedder(fake) as embedder:
        vectors = await embedder.embed_passages(texts)
    requests = fake.embedding_requests
    assert [len(r.json["input"]) for r in requests] == [256, 44]
    assert requests[0].json["model"] == "text-embedding-3-small"
    assert requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert len(vectors) == 300
    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(fake_embedding(text, DIM), abs=1e-6)
    assert all(norm(v) == pytest.approx(1.0, abs=1e-6) for v in vectors)
    assert embedder.dimensions == DIM


async def test_batches_also_split_by_summed_tokens(fake: FakeOpenAI) -> None:
    texts = ["o pão de fermentação natural sai do forno às dez horas"] * 6
    per_text = count_tokens(texts[0])
    async with make_embedder(fake, max_tokens_per_call=per_text * 2) as embedder:
        await embedder.embed_passages(texts)
    assert [len(r.json["input"]) for r in fake.embedding_requests] == [2, 2, 2]


async def test_429_then_200_is_retried(fake: FakeOpenAI) -> None:
    fake.enqueue(429, headers={"Retry-After": "0"}, endpoint="embeddings")
    async with make_embedder(fake) as embedder:
        vector = await embedder.embed_query("Vocês entregam aos domingos?")
    assert len(fake.embedding_requests) == 2
    assert fake.pending_answers == 0
    assert vector == pytest.approx(fake_embedding("Vocês entregam aos domingos?", DIM), abs=1e-6)


async def test_timeout_and_5xx_are_retried(fake: FakeOpenAI) -> None:
    fake.enqueue(200, delay=1.0, endpoint="embeddings")
    fake.enqueue(503, endpoint="embeddings")
    async with make_embedder(fake, timeout=0.2) as embedder:
        vectors = await embedder.embed_passages(["bolo de cenoura"])
    assert len(fake.embedding_requests) == 3
    assert len(vectors) == 1


async def test_gives_up_after_max_retries_with_a_retriable_error(fake: FakeOpenAI) -> None:
    for _ in range(3):
        fake.enqueue(500, endpoint="embeddings")
    async with make_embedder(fake, max_retries=2) as embedder:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_query("cuca de banana")
    assert caught.value.code == "http_500"
    assert caught.value.retriable
    assert len(fake.embedding_requests) == 3


async def test_401_is_an_embedding_error_without_retry(fake: FakeOpenAI) -> None:
    async with make_embedder(fake, api_key="sk-wrong") as embedder:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_passages(["qualquer texto"])
    assert caught.value.code == "http_401"
    assert not caught.value.retriable
    assert len(fake.embedding_requests) == 1


async def test_given_dimensions_that_the_endpoint_does_not_return_are_refused(
    fake: FakeOpenAI,
) -> None:
    async with make_embedder(fake, dimensions=1536) as embedder:
        check_dimensions(embedder, 1536)
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_query("pão francês")
    assert caught.value.code == "dimension_mismatch"


async def test_dimensions_are_learned_then_enforced(fake: FakeOpenAI) -> None:
    async with make_embedder(fake) as embedder:
        with pytest.raises(EmbeddingError) as unknown:
            _ = embedder.dimensions
        assert unknown.value.code == "dimensions_unknown"
        assert getattr(embedder, "dimensions", None) is None  # also an AttributeError
        await embedder.warm_up()
        assert embedder.dimensions == DIM
        assert isinstance(embedder, Embedder)
        with pytest.raises(EmbeddingError) as mismatch:
            check_dimensions(embedder, 1536)
        assert mismatch.value.code == "dimension_mismatch"
        # The model behind the URL changes: a 32-dim answer must not be stored as 64.
        other = {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": fake_embedding("x", 32)}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
        fake.enqueue(200, other, endpoint="embeddings")
        with pytest.raises(EmbeddingError) as changed:
            await embedder.embed_query("x")
    assert changed.value.code == "dimension_mismatch"


async def test_send_dimensions_asks_the_api_for_shorter_vectors(fake: FakeOpenAI) -> None:
    async with make_embedder(fake, dimensions=16, send_dimensions=True) as embedder:
        vector = await embedder.embed_query("brigadeiro")
    assert fake.embedding_requests[0].json["dimensions"] == 16
    assert len(vector) == 16


async def test_wrong_number_of_vectors_is_an_invalid_response(fake: FakeOpenAI) -> None:
    short = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": fake_embedding("a", DIM)}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    fake.enqueue(200, short, endpoint="embeddings")
    async with make_embedder(fake) as embedder:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_passages(["a", "b"])
    assert caught.value.code == "invalid_response"


async def test_empty_text_is_refused_before_any_call(fake: FakeOpenAI) -> None:
    async with make_embedder(fake) as embedder:
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed_passages(["ok", ""])
    assert caught.value.code == "invalid_input"
    assert fake.embedding_requests == []


async def test_counts_cl100k_tokens(fake: FakeOpenAI) -> None:
    text = "Encomendas de bolos precisam de 48 horas de antecedência."
    async with make_embedder(fake) as embedder:
        assert embedder.count_model_tokens(text) == count_tokens(text)
        assert embedder.max_input_tokens == 8191


async def test_registry_keeps_one_instance_per_model_and_url(fake: FakeOpenAI) -> None:
    settings = SimpleNamespace(
        embedding_base_url=fake.base_url,
        embedding_api_key=SecretStr(API_KEY),
        embedding_model="text-embedding-3-small",
    )
    try:
        first = embedder_from_settings("openai", settings)
        assert first is get_embedder(
            "openai", model="text-embedding-3-small", base_url=fake.base_url
        )
        assert first is not get_embedder("openai", model="other-model", base_url=fake.base_url)
        assert first.name == "openai"
        assert len(await first.embed_query("Aceitam Pix?")) == DIM
    finally:
        await close_embedders("openai")
    assert get_embedder("openai", base_url=fake.base_url, api_key=API_KEY) is not first
    await close_embedders("openai")


def test_openai_from_settings_needs_an_endpoint() -> None:
    settings = SimpleNamespace(
        embedding_base_url=None, embedding_api_key=None, embedding_model="text-embedding-3-small"
    )
    with pytest.raises(EmbeddingError) as caught:
        embedder_from_settings("openai", settings)
    assert caught.value.code == "not_configured"


def test_unknown_embedder_name() -> None:
    with pytest.raises(EmbeddingError) as caught:
        get_embedder("bert")
    assert caught.value.code == "unknown_embedder"
