"""Every embedder name the API accepts stores a model id its embedder ships."""

from __future__ import annotations

import pytest

from agents_pipeline.embeddings import EMBEDDER_NAMES, get_embedder
from gateway.handlers.knowledge import LOCAL_MODELS, KnowledgeBaseCreate


def test_the_api_accepts_every_embedder_name() -> None:
    for name in EMBEDDER_NAMES:
        assert KnowledgeBaseCreate(name="FAQ", embedding=name).embedding == name


@pytest.mark.parametrize("name", sorted(LOCAL_MODELS))
def test_local_bases_name_a_model_their_embedder_loads(name: str) -> None:
    model, dimensions = LOCAL_MODELS[name]
    embedder = get_embedder(name, model=model)  # raises unknown_model for an id it lacks
    assert embedder.model == model and embedder.dimensions == dimensions


def test_every_local_embedder_name_is_mapped() -> None:
    assert set(LOCAL_MODELS) == set(EMBEDDER_NAMES) - {"openai"}
