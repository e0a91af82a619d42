"""Knowledge-base documents: uploaded bytes → text blocks → chunks to embed.

Pure functions, no I/O: ``extract`` reads the bytes it is given, ``chunk`` the blocks.
"""

from __future__ import annotations

from agents_pipeline.knowledge.chunking import Chunk, chunk, split_sentences
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
