"""Knowledge-base documents: uploaded bytes → text blocks → chunks to embed.

Pure functions, no I/O: ``extract`` reads the bytes it is given, ``chunk`` the blocks.
Chunking (tiktoken, and through ``agents_pipeline.llm`` the openai client) is imported on
first use, so that the extraction child processes (``sandbox``) start in a fraction of a
second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents_pipeline.knowledge.extract import (
    DEFAULT_MAX_BYTES,
    Block,
    BlockKind,
    DocumentFormat,
    ExtractedDocument,
    ExtractionCode,
    ExtractionError,
    detect_format,
    extract,
)

if TYPE_CHECKING:
    from agents_pipeline.knowledge.chunking import Chunk, chunk, split_sentences

_LAZY = frozenset({"Chunk", "chunk", "split_sentences"})

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Block",
    "BlockKind",
    "Chunk",
    "DocumentFormat",
    "ExtractedDocument",
    "ExtractionCode",
    "ExtractionError",
    "chunk",
    "detect_format",
    "extract",
    "split_sentences",
]


def __getattr__(name: str) -> Any:
    """The chunking names, imported when first asked for."""
    if name in _LAZY:
        from agents_pipeline.knowledge import chunking

        return getattr(chunking, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
