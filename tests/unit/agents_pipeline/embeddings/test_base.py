"""Helpers every embedder relies on: normalisation, batching, dimension checks, metrics."""

from __future__ import annotations

import math

import pytest

from agents_pipeline.embeddings import EmbeddingError, check_vector_dimensions, l2_normalize
from agents_pipeline.embeddings.base import batched, length_order
from ops.bench.embed_compare import Scores


def test_l2_normalize_gives_unit_vectors_and_refuses_zero() -> None:
    assert l2_normalize([3.0, 4.0]) == pytest.approx([0.6, 0.8])
    for bad in ([0.0, 0.0], [math.nan, 1.0], [math.inf, 1.0]):
        with pytest.raises(EmbeddingError) as caught:
            l2_normalize(bad)
        assert caught.value.code == "invalid_response"


def test_batched_and_length_order() -> None:
    assert [list(b) for b in batched([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError):
        list(batched([1], 0))
    assert length_order(["aa", "a", "aaa"]) == [2, 0, 1]


def test_vector_dimension_check_names_the_source() -> None:
    check_vector_dimensions([[0.0] * 4, [1.0] * 4], 4, "test")
    with pytest.raises(EmbeddingError, match="3-dimensional") as caught:
        check_vector_dimensions([[0.0] * 4, [1.0] * 3], 4, "test")
    assert caught.value.code == "dimension_mismatch"
    assert not caught.value.retriable


def test_recall_and_mrr() -> None:
    scores = Scores({"a": 1, "b": 4, "c": 7, "d": None})
    ids = ["a", "b", "c", "d"]
    assert scores.recall(ids, k=5) == 0.5
    assert scores.mrr(ids) == pytest.approx((1 + 1 / 4 + 1 / 7) / 4)


def test_fusion_weights_halve_the_side_that_ranks_worse() -> None:
    from agents_pipeline.embeddings import fusion_weights
    from agents_pipeline.embeddings.local import MiniLMEmbedder
    from agents_pipeline.embeddings.multilingual import E5Embedder

    # MiniLM reads English: its vectors lead there and follow the words elsewhere.
    assert fusion_weights(MiniLMEmbedder, "en") == (1.0, 0.5)
    assert fusion_weights(MiniLMEmbedder, "en-US") == (1.0, 0.5)
    assert fusion_weights(MiniLMEmbedder, "pt") == (0.5, 1.0)
    # e5 (and any embedder that names no languages) reads them all.
    assert fusion_weights(E5Embedder, "pt") == (1.0, 0.5)
    assert fusion_weights(object(), "de") == (1.0, 0.5)
