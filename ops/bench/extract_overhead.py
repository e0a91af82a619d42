"""What extracting in a warm child process (knowledge.sandbox) adds per document.

    .venv/bin/python ops/bench/extract_overhead.py [--rounds 30]

For the eval documents (ops/eval/documents, a few KB of Markdown each, as ingestion sees
them), one document of each other format, and larger uploads (1 and 5 MB), the median wall
time of ``extract`` in this process and of ``ExtractionPool.extract`` with its children
warm: the difference is the bytes sent over a pipe, the child's reading of them, and the
blocks coming back as JSON. For scale: the worker's model embeds a chunk in ~27 ms of CPU
(ops/eval/NOTE.md), and an eval document has ~8 chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agents_pipeline.knowledge import extract  # noqa: E402
from agents_pipeline.knowledge.sandbox import ExtractionLimits, ExtractionPool  # noqa: E402
from ops.bench.rag_eval import load_documents  # noqa: E402
from tests.unit.agents_pipeline.knowledge.samples import make_docx, make_pdf  # noqa: E402


def samples() -> dict[str, bytes]:
    """The documents measured, by file name."""
    docs = dict(load_documents())
    eval_md = b"\n\n".join(docs.values())
    docs["formats.pdf"] = make_pdf([["Horários de funcionamento", "Abrimos às 6h."]] * 5)
    docs["formats.docx"] = make_docx()
    docs["formats.html"] = b"<h1>Loja</h1>" + b"<p>Texto de exemplo, com <b>marca</b>.</p>" * 50
    docs["1mb.md"] = (eval_md * (1_000_000 // len(eval_md) + 1))[:1_000_000]
    docs["5mb.txt"] = (b"Uma linha de texto comum, de uma FAQ.\n\n" * 140_000)[:5_000_000]
    return docs


def median_ms(times: list[float]) -> float:
    """Median in milliseconds."""
    return statistics.median(times) * 1000


async def main(rounds: int) -> None:
    """Measure and print one line per document, then the eval documents' median."""
    pool = ExtractionPool(ExtractionLimits(processes=1))
    await pool.warm_up()
    overheads: list[float] = []
    print(f"{'document':34s} {'bytes':>9s} {'in process':>11s} {'child':>9s} {'added':>8s}")
    try:
        for name, data in samples().items():
            local, child = [], []
            big = len(data) > 100_000
            for _ in range(3 if big else rounds):
                t0 = time.perf_counter()
                extract(data, filename=name)
                local.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await pool.extract(data, filename=name, mime_type=None)
                child.append(time.perf_counter() - t0)
            added = median_ms(child) - median_ms(local)
            if name.endswith(".md") and not big:
                overheads.append(added)
            print(
                f"{name:34s} {len(data):9d} {median_ms(local):9.2f}ms {median_ms(child):7.2f}ms"
                f" {added:+6.2f}ms"
            )
    finally:
        await pool.close()
    print(f"eval documents: median added {statistics.median(overheads):.2f} ms per document")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args().rounds))
