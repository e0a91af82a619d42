"""Which embedder should a Portuguese knowledge base use? Retrieval quality and speed on ops/eval.

    .venv/bin/python ops/bench/embed_compare.py [--models local,multilingual] [--runs 3]

It splits ops/eval/documents into ~150-token chunks (with ``agents_pipeline.knowledge``
when it exists, else the paragraph splitter below), embeds them with each
model through the ``Embedder`` protocol, ranks chunks by cosine for every question of
ops/eval/questions.json (vectors only, numpy) and prints, per model and for the
Portuguese, English and all questions:

- recall@5: share of questions with an answering chunk among the top 5;
- MRR@10: mean of 1/rank of the first answering chunk within the top 10 (0 if none);
- passages/s: chunks embedded per second by ``embed_passages`` (median of ``--runs``,
  model already loaded), the process CPU time per chunk (all threads: less sensitive
  than wall time to other work on the machine), and the median latency of one
  ``embed_query``.

A chunk answers a question when it comes from a ``relevant.document`` and contains
its ``relevant.contains`` text (whitespace runs collapsed in both). For reference
only, not candidates: a BM25 row (lexical) and each model fused with BM25 by
reciprocal rank fusion. For MiniLM it also prints the lowest cosine between its
bfloat16-autocast and float32 vectors of every chunk and question, and both speeds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EVAL = REPO / "ops" / "eval"
CHUNK_TOKENS = 150
_HEADING = re.compile(r"^(#{1,6} .+|[A-Z0-9][A-Z0-9 ,'&-]{3,})$")
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Chunk:
    """A piece of one document, the unit that is embedded and retrieved."""

    document: str
    text: str


@dataclass(frozen=True)
class Question:
    """One eval question and the (document, text) pairs any of which answers it."""

    id: str
    lang: str
    kind: str
    text: str
    relevant: tuple[tuple[str, str], ...]


def squash(text: str) -> str:
    """Whitespace runs as one space, so matching ignores line breaks."""
    return " ".join(text.split())


def load_documents() -> dict[str, str]:
    """The eval documents by file name."""
    docs = sorted(EVAL.glob("documents/*.md")) + sorted(EVAL.glob("documents/*.txt"))
    return {path.name: path.read_text(encoding="utf-8") for path in docs}


def load_questions() -> list[Question]:
    """ops/eval/questions.json as ``Question`` objects."""
    data = json.loads((EVAL / "questions.json").read_text(encoding="utf-8"))
    return [
        Question(
            id=q["id"],
            lang=q["lang"],
            kind=q["kind"],
            text=q["question"],
            relevant=tuple((r["document"], squash(r["contains"])) for r in q["relevant"]),
        )
        for q in data["questions"]
    ]


# --- chunking ------------------------------------------------------------------------------


def _pieces(paragraph: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """A paragraph as is when it fits ``limit`` tokens, else its sentences packed greedily."""
    if count(paragraph) <= limit:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        candidate = f"{current} {sentence}".strip()
        if current and count(candidate) > limit:
            pieces.append(current)
            candidate = sentence
        current = candidate
    if current:
        pieces.append(current)
    return pieces


def split_paragraphs(text: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """Paragraphs packed up to ``limit`` tokens; a heading starts a chunk and leads each piece.

    Sections never share a chunk, and a section cut in several chunks repeats its
    heading in each, so every chunk says what it is about.
    """
    chunks: list[str] = []
    heading = ""
    body: list[str] = []

    def flush() -> None:
        if body:
            chunks.append("\n\n".join([heading, *body]) if heading else "\n\n".join(body))
        body.clear()

    for block in (b.strip() for b in re.split(r"\n\s*\n", text)):
        if not block:
            continue
        if _HEADING.match(block):
            flush()
            heading = block.lstrip("#").strip()
            continue
        room = limit - (count(heading) if heading else 0)
        for piece in _pieces(block, room, count):
            if body and count("\n\n".join([heading, *body, piece])) > limit:
                flush()
            body.append(piece)
    flush()
    return chunks


def chunk_documents(
    documents: dict[str, str], limit: int, splitter: str = "auto"
) -> tuple[list[Chunk], str]:
    """Every document's chunks, with a description of the splitter that made them.

    ``auto`` uses the pipeline's own chunker (``agents_pipeline.knowledge``) when it
    exists, capped at MiniLM's 256 word pieces so no model reads a cut chunk, and this
    script's paragraph splitter otherwise; ``pipeline`` or ``paragraph`` force one.
    """
    if splitter in ("auto", "pipeline"):
        try:
            from agents_pipeline.knowledge import chunk, extract
        except ImportError:
            if splitter == "pipeline":
                raise
        else:
            from agents_pipeline.embeddings.local import MAX_INPUT_TOKENS, MiniLMEmbedder

            word_pieces = MiniLMEmbedder().count_model_tokens  # the tokenizer only, no torch
            chunks = [
                Chunk(name, piece.text)
                for name, text in documents.items()
                for piece in chunk(
                    extract(text.encode(), filename=name),
                    max_tokens=limit,
                    hard_limit_tokens=MAX_INPUT_TOKENS,
                    model_tokens=word_pieces,
                )
            ]
            return chunks, (
                f"pipeline chunker (max {limit} cl100k tokens, default overlap, "
                f"at most {MAX_INPUT_TOKENS} MiniLM word pieces)"
            )
    from agents_pipeline.llm.tokens import count_tokens

    chunks = [
        Chunk(name, piece)
        for name, text in documents.items()
        for piece in split_paragraphs(text, limit, count_tokens)
    ]
    return chunks, f"paragraph splitter of this script ({limit} cl100k tokens, no overlap)"


# --- retrieval metrics ---------------------------------------------------------------------


def answers(chunk: Chunk, question: Question) -> bool:
    """True when the chunk holds one of the question's answering passages."""
    text = squash(chunk.text)
    return any(chunk.document == doc and needle in text for doc, needle in question.relevant)


def first_hit(ranking: Sequence[int], chunks: Sequence[Chunk], question: Question) -> int | None:
    """1-based rank of the first answering chunk, or None."""
    for rank, index in enumerate(ranking, 1):
        if answers(chunks[index], question):
            return rank
    return None


@dataclass
class Scores:
    """Per-question first-hit ranks of one retriever (within the top 10)."""

    ranks: dict[str, int | None] = field(default_factory=dict)

    def recall(self, ids: Sequence[str], k: int = 5) -> float:
        """Share of ``ids`` answered within the top ``k``."""
        hits = [self.ranks[i] for i in ids]
        return sum(1 for r in hits if r is not None and r <= k) / len(ids) if ids else math.nan

    def mrr(self, ids: Sequence[str], k: int = 10) -> float:
        """Mean reciprocal rank of the first answer within the top ``k``."""
        hits = [self.ranks[i] for i in ids]
        return sum(1 / r for r in hits if r is not None and r <= k) / len(ids) if ids else math.nan


def score_rankings(
    rankings: dict[str, Sequence[int]], chunks: Sequence[Chunk], questions: Sequence[Question]
) -> Scores:
    """First-hit ranks of every question's top-10 ranking."""
    scores = Scores()
    for q in questions:
        scores.ranks[q.id] = first_hit(list(rankings[q.id])[:10], chunks, q)
    return scores


def dense_rankings(
    passages: np.ndarray, queries: np.ndarray, questions: Sequence[Question], depth: int = 10
) -> dict[str, list[int]]:
    """Top-``depth`` chunk indices per question by cosine (vectors are unit length)."""
    similarity = queries @ passages.T
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :depth]
    return {q.id: top[i].tolist() for i, q in enumerate(questions)}


def rrf(*rankings: dict[str, list[int]], k: int = 60) -> dict[str, list[int]]:
    """Reciprocal rank fusion of full rankings: the usual way to mix dense and lexical."""
    fused: dict[str, list[int]] = {}
    for qid in rankings[0]:
        score: dict[int, float] = {}
        for ranking in rankings:
            for rank, index in enumerate(ranking[qid], 1):
                score[index] = score.get(index, 0.0) + 1 / (k + rank)
        fused[qid] = sorted(score, key=lambda i: -score[i])[:10]
    return fused


def _fold(text: str) -> list[str]:
    """Lower-case, accent-free words, for BM25."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WORD.findall(plain)


def bm25_rankings(
    chunks: Sequence[Chunk],
    questions: Sequence[Question],
    depth: int = 10,
    k1: float = 1.2,
    b: float = 0.75,
) -> dict[str, list[int]]:
    """Top-``depth`` chunk indices per question by Okapi BM25 over folded words (lexical)."""
    docs = [Counter(_fold(c.text)) for c in chunks]
    lengths = [sum(d.values()) for d in docs]
    average = sum(lengths) / len(lengths)
    df: Counter[str] = Counter(term for d in docs for term in d)
    n = len(docs)
    rankings: dict[str, list[int]] = {}
    for q in questions:
        terms = set(_fold(q.text))
        scores = []
        for d, length in zip(docs, lengths, strict=True):
            s = 0.0
            for t in terms:
                if t in d:
                    idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    s += idf * d[t] * (k1 + 1) / (d[t] + k1 * (1 - b + b * length / average))
            scores.append(s)
        # Only chunks sharing a word: a lexical retriever finds nothing else, and a tail of
        # zero scores in arbitrary order would only add noise to a fusion.
        matched = [i for i in range(n) if scores[i] > 0]
        rankings[q.id] = sorted(matched, key=lambda i: -scores[i])[:depth]
    return rankings


# --- models --------------------------------------------------------------------------------


@dataclass
class ModelRun:
    """What one model did: its scores and speeds."""

    label: str
    scores: Scores
    load_s: float | None = None
    passages_per_s: float | None = None
    cpu_ms_per_passage: float | None = None
    query_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def run_model(
    label: str, embedder: Any, chunks: Sequence[Chunk], questions: Sequence[Question], runs: int
) -> tuple[ModelRun, ModelRun]:
    """Load, embed chunks ``runs`` times (timed) and questions; score dense and hybrid rankings."""
    texts = [c.text for c in chunks]
    started = time.perf_counter()
    await embedder.warm_up()
    load_s = time.perf_counter() - started
    # One untimed pass: first calls set up kernels for each new shape, threads, memory.
    await embedder.embed_passages(texts)
    rates = []
    cpu_costs = []
    passages = np.empty(0)
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        passages = np.asarray(await embedder.embed_passages(texts), dtype=np.float32)
        rates.append(len(texts) / (time.perf_counter() - started))
        cpu_costs.append((time.process_time() - cpu_started) * 1000 / len(texts))
    latencies = []
    query_vectors = []
    for q in questions:
        started = time.perf_counter()
        query_vectors.append(await embedder.embed_query(q.text))
        latencies.append((time.perf_counter() - started) * 1000)
    queries = np.asarray(query_vectors, dtype=np.float32)
    scores = score_rankings(dense_rankings(passages, queries, questions), chunks, questions)
    full = dense_rankings(passages, queries, questions, depth=len(chunks))
    lexical = bm25_rankings(chunks, questions, depth=len(chunks))
    hybrid = score_rankings(rrf(full, lexical), chunks, questions)
    run = ModelRun(
        label,
        scores,
        load_s=load_s,
        passages_per_s=statistics.median(rates),
        cpu_ms_per_passage=statistics.median(cpu_costs),
        query_ms=statistics.median(latencies),
    )
    return run, ModelRun(f"{label} + BM25 (RRF)", hybrid)


def bf16_check(embedder: Any, texts: Sequence[str]) -> float:
    """Lowest cosine between MiniLM's bfloat16-autocast and float32 vectors of ``texts``."""
    previous = embedder.bfloat16
    try:
        embedder.bfloat16 = True
        fast = embedder.encode(list(texts))
        embedder.bfloat16 = False
        exact = embedder.encode(list(texts))
    finally:
        embedder.bfloat16 = previous
    return float(np.min(np.sum(fast * exact, axis=1)))


async def bf16_rates(
    embedder: Any, texts: Sequence[str], runs: int
) -> dict[bool, tuple[float, float]]:
    """MiniLM (passages/s, CPU ms/passage) with and without bfloat16 autocast, medians.

    Rounds alternate between the two so that other work on the machine weighs on both
    alike; each round is one ``embed_passages`` call, as ingestion runs the model.
    """
    previous = embedder.bfloat16
    samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        for flag in (False, True):  # first-call costs (kernel set-up) off the clock
            embedder.bfloat16 = flag
            await embedder.embed_passages(list(texts[:16]))
        for _ in range(runs):
            for flag in (False, True):
                embedder.bfloat16 = flag
                started, cpu_started = time.perf_counter(), time.process_time()
                await embedder.embed_passages(list(texts))
                wall = time.perf_counter() - started
                cpu_ms = (time.process_time() - cpu_started) * 1000 / len(texts)
                samples[flag].append((len(texts) / wall, cpu_ms))
    finally:
        embedder.bfloat16 = previous
    return {
        flag: (statistics.median(r for r, _ in pairs), statistics.median(c for _, c in pairs))
        for flag, pairs in samples.items()
    }


# --- report --------------------------------------------------------------------------------


def report(
    runs: Sequence[ModelRun], questions: Sequence[Question], chunks: Sequence[Chunk]
) -> dict[str, Any]:
    """Print the tables; return the same numbers for --json."""
    groups = {
        "pt": [q.id for q in questions if q.lang == "pt"],
        "en": [q.id for q in questions if q.lang == "en"],
        "all": [q.id for q in questions],
    }
    kinds = sorted({q.kind for q in questions})
    by_kind = {k: [q.id for q in questions if q.kind == k] for k in kinds}
    header = f"{'model':<48}" + "".join(f"{g + f' ({len(ids)})':>22}" for g, ids in groups.items())
    print("\nrecall@5 / MRR@10")
    print(header)
    result: dict[str, Any] = {}
    for run in runs:
        cells = "".join(
            f"{run.scores.recall(ids):>13.3f} / {run.scores.mrr(ids):.3f}"
            for ids in groups.values()
        )
        print(f"{run.label:<48}{cells}")
        result[run.label] = {
            g: {"recall@5": run.scores.recall(ids), "mrr@10": run.scores.mrr(ids)}
            for g, ids in groups.items()
        } | {
            "by_kind": {
                k: {"recall@5": run.scores.recall(ids), "mrr@10": run.scores.mrr(ids)}
                for k, ids in by_kind.items()
            },
            "ranks": run.scores.ranks,
            "load_s": run.load_s,
            "passages_per_s": run.passages_per_s,
            "cpu_ms_per_passage": run.cpu_ms_per_passage,
            "query_ms": run.query_ms,
            **run.extra,
        }
    print("\nrecall@5 / MRR@10 by kind of question")
    print(f"{'model':<48}" + "".join(f"{k + f' ({len(by_kind[k])})':>22}" for k in kinds))
    for run in runs:
        cells = "".join(
            f"{run.scores.recall(ids):>13.3f} / {run.scores.mrr(ids):.3f}"
            for ids in by_kind.values()
        )
        print(f"{run.label:<48}{cells}")
    print(f"\nspeed on these {len(chunks)} chunks (model loaded; median of runs)")
    print(f"{'model':<48}{'load s':>10}{'passages/s':>14}{'CPU ms/passage':>16}{'query ms':>12}")
    for run in runs:
        if run.passages_per_s is None:
            continue
        print(
            f"{run.label:<48}{run.load_s or 0:>10.2f}{run.passages_per_s:>14.1f}"
            f"{run.cpu_ms_per_passage or 0:>16.1f}{run.query_ms or 0:>12.1f}"
        )
    misses = {
        run.label: [qid for qid, rank in run.scores.ranks.items() if rank is None or rank > 5]
        for run in runs
    }
    print("\nquestions not answered in the top 5:")
    for label, ids in misses.items():
        print(f"  {label}: {', '.join(ids) or '-'}")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--models",
        default="local,multilingual",
        help="comma-separated: local, multilingual (e5 enpt), multilingual-original (e5 full)",
    )
    p.add_argument("--runs", type=int, default=3, help="timed encodes per model (median)")
    p.add_argument("--chunk-tokens", type=int, default=CHUNK_TOKENS, help="chunk size, cl100k")
    p.add_argument(
        "--splitter",
        choices=("auto", "pipeline", "paragraph"),
        default="auto",
        help="auto: the pipeline's chunker when it exists, else the paragraph splitter",
    )
    p.add_argument("--json", type=Path, help="also write the numbers to this file")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    """Chunk, embed, rank, report."""
    from agents_pipeline.embeddings.local import MiniLMEmbedder
    from agents_pipeline.embeddings.multilingual import E5Embedder

    documents = load_documents()
    questions = load_questions()
    chunks, splitter = chunk_documents(documents, args.chunk_tokens, args.splitter)
    unreachable = [
        q.id for q in questions if not any(answers(c, q) for c in chunks)
    ]  # an answer cut by a chunk boundary could never be found
    print(f"{len(documents)} documents, {len(chunks)} chunks by the {splitter}")
    print(
        f"{len(questions)} questions: "
        + ", ".join(f"{n} {k}" for k, n in Counter(q.lang for q in questions).items())
    )
    if unreachable:
        print(f"WARNING: no chunk holds the answer of {', '.join(unreachable)}")

    factories: dict[str, Callable[[], Any]] = {
        "local": lambda: MiniLMEmbedder(),
        "multilingual": lambda: E5Embedder(),
        "multilingual-original": lambda: E5Embedder(model="multilingual-e5-small-q4"),
    }
    runs: list[ModelRun] = [
        ModelRun(
            "BM25 (lexical reference)",
            score_rankings(bm25_rankings(chunks, questions), chunks, questions),
        )
    ]
    hybrids: list[ModelRun] = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in factories:
            print(f"unknown model {name!r}; choose from {sorted(factories)}", file=sys.stderr)
            return 2
        embedder = factories[name]()
        print(f"embedding with {name} ({embedder.model}) ...", flush=True)
        run, hybrid = await run_model(
            f"{name}: {embedder.model}", embedder, chunks, questions, args.runs
        )
        tokens = [embedder.count_model_tokens(c.text) for c in chunks]
        run.extra["max_chunk_model_tokens"] = max(tokens)
        run.extra["chunks_over_window"] = sum(t > embedder.max_input_tokens for t in tokens)
        print(
            f"  chunk sizes in its own tokens: median {statistics.median(tokens):.0f}, "
            f"max {max(tokens)} (window {embedder.max_input_tokens}, "
            f"{run.extra['chunks_over_window']} over it)"
        )
        if name == "local":
            texts = [c.text for c in chunks] + [q.text for q in questions]
            low = await asyncio.to_thread(bf16_check, embedder, texts)
            rates = await bf16_rates(embedder, [c.text for c in chunks], args.runs)
            run.extra |= {
                "bf16": embedder.bfloat16,
                "bf16_min_cosine": low,
                "fp32_passages_per_s": rates[False][0],
                "fp32_cpu_ms_per_passage": rates[False][1],
                "bf16_passages_per_s": rates[True][0],
                "bf16_cpu_ms_per_passage": rates[True][1],
            }
            print(
                f"  bfloat16 autocast {'on' if embedder.bfloat16 else 'off'}: min cosine with "
                f"float32 over {len(texts)} chunks+questions {low:.6f}\n"
                f"  float32 {rates[False][0]:.1f} passages/s ({rates[False][1]:.1f} CPU ms each), "
                f"bfloat16 {rates[True][0]:.1f}/s ({rates[True][1]:.1f} CPU ms each)"
            )
        runs.append(run)
        hybrids.append(hybrid)
    result = report(runs + hybrids, questions, chunks)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
