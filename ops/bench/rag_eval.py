"""Retrieval quality of the real search path on ops/eval: vector vs full-text vs hybrid (RRF).

    .venv/bin/python ops/bench/rag_eval.py [--embedder local|multilingual | --both] [--sweep]

Figures measured with it, and what they say: ops/eval/NOTE.md.

Starts PostgreSQL + pgvector (pgserver, temp dir), migrates, and ingests ops/eval/documents
into one Portuguese knowledge base per embedder with the production functions
(``storage.knowledge.add_document`` → ``claim_document`` → ``plan_chunks`` →
``embed_passages`` → ``finish_document``; no broker). Then every question of
ops/eval/questions.json goes through ``storage.knowledge.hybrid_search`` in the three
modes, and the script prints recall@5 and MRR@10 for the Portuguese, English and all
questions.

A retrieved chunk answers a question when it comes from a ``relevant.document`` and,
whitespace runs collapsed in both, contains that ``relevant.contains`` text.

Hybrid runs with the weights KnowledgeSearch gives it (``embeddings.fusion_weights``: the
side that ranks worse with that model in that language counts half). When hybrid does not beat both
single modes (or with ``--sweep``), it also explains the misses and measures other
weights, RRF constants, candidates per side and text-match caps, through hybrid_search's
own parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from omnichat.embedded import EmbeddedPostgres  # noqa: E402
from storage.knowledge import TEXT_MATCH_CAP  # noqa: E402

EVAL = REPO / "ops" / "eval"
MODES = ("vector", "text", "hybrid")
GROUPS = ("pt", "en", "all")
TOP = 10  # ranks looked at: MRR@10; recall is @5


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


def load_documents() -> dict[str, bytes]:
    """The eval documents by file name (their bytes, as an upload would carry them)."""
    paths = sorted(p for p in (EVAL / "documents").iterdir() if p.is_file())
    return {p.name: p.read_bytes() for p in paths}


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


def answers(document: str, text: str, q: Question) -> bool:
    """True when a chunk of ``document`` holds one of the question's answering passages."""
    flat = squash(text)
    return any(document == d and needle in flat for d, needle in q.relevant)


# --- the database ----------------------------------------------------------------------


@contextlib.contextmanager
def postgres() -> Iterator[EmbeddedPostgres]:
    """A fresh, migrated PostgreSQL in a temp dir, removed afterwards."""
    from storage.migrate import migrate

    tmp = Path(tempfile.mkdtemp(prefix="omnichat-rag-"))
    pg = EmbeddedPostgres(tmp / "pg")
    try:
        pg.start()
        asyncio.run(migrate(pg.url))
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def create_workspace(pool: Any, name: str = "RAG eval") -> uuid.UUID:
    """A workspace row (the API is not needed for this)."""
    async with pool.connection() as conn:
        cur = await conn.execute("INSERT INTO workspaces (name) VALUES (%s) RETURNING id", (name,))
        row = await cur.fetchone()
    return row["id"]


async def create_kb(pool: Any, workspace_id: uuid.UUID, embedder: Any, language: str) -> uuid.UUID:
    """A knowledge base for this embedder."""
    from storage import knowledge

    async with pool.connection() as conn:
        kb = await knowledge.create_kb(
            conn,
            workspace_id=workspace_id,
            name=f"eval-{embedder.name}",
            language=language,
            embedding=embedder.name,
            embedding_model=embedder.model,
            dimensions=embedder.dimensions,
        )
    return kb["id"]


@dataclass
class IngestStats:
    """What direct ingestion did and how long its parts took."""

    documents: int = 0
    chunks: int = 0
    model_tokens: int = 0
    plan_s: float = 0.0
    embed_s: float = 0.0
    write_s: float = 0.0


async def ingest_directly(
    pool: Any,
    workspace_id: uuid.UUID,
    kb_id: uuid.UUID,
    documents: dict[str, bytes],
    embedder: Any,
) -> IngestStats:
    """Store, claim, chunk, embed and finish each document with the production functions."""
    from agents_pipeline.ingest import plan_chunks
    from storage import knowledge

    stats = IngestStats()
    for name, data in documents.items():
        async with pool.connection() as conn:
            row, _ = await knowledge.add_document(
                conn,
                workspace_id=workspace_id,
                kb_id=kb_id,
                title=name,
                filename=name,
                mime_type=None,
                content=data,
                content_hash=hashlib.sha256(data).hexdigest(),
            )
        async with pool.connection() as conn:
            doc = await knowledge.claim_document(conn, doc_id=row["id"])
        assert doc is not None, name
        t0 = time.perf_counter()
        planned = plan_chunks(data, filename=name, mime_type=None, embedder=embedder)
        t1 = time.perf_counter()
        vectors = await embedder.embed_passages([c["text"] for c in planned])
        t2 = time.perf_counter()
        for c, v in zip(planned, vectors, strict=True):
            c["embedding"] = v
        async with pool.connection() as conn:
            assert await knowledge.finish_document(conn, doc=doc, chunks=planned)
        t3 = time.perf_counter()
        stats.documents += 1
        stats.chunks += len(planned)
        stats.model_tokens += sum(embedder.count_model_tokens(c["text"]) for c in planned)
        stats.plan_s += t1 - t0
        stats.embed_s += t2 - t1
        stats.write_s += t3 - t2
    return stats


# --- scoring ---------------------------------------------------------------------------


@dataclass
class Scores:
    """First-answer rank (1-based, within the top 10) of every question, None if absent."""

    ranks: dict[str, int | None] = field(default_factory=dict)

    def recall(self, ids: Sequence[str], k: int = 5) -> float:
        """Share of ``ids`` answered within the top ``k``."""
        hits = [self.ranks[i] for i in ids]
        return sum(1 for r in hits if r is not None and r <= k) / len(ids) if ids else 0.0

    def mrr(self, ids: Sequence[str], k: int = TOP) -> float:
        """Mean of 1/rank of the first answer within the top ``k`` (0 when none)."""
        hits = [self.ranks[i] for i in ids]
        return sum(1 / r for r in hits if r is not None and r <= k) / len(ids) if ids else 0.0


def groups_of(questions: Sequence[Question]) -> dict[str, list[str]]:
    """Question ids by group: pt, en, all."""
    return {
        "pt": [q.id for q in questions if q.lang == "pt"],
        "en": [q.id for q in questions if q.lang == "en"],
        "all": [q.id for q in questions],
    }


@dataclass(frozen=True)
class Knobs:
    """hybrid_search's tunable parameters (defaults: its own)."""

    candidates: int = 40
    rrf_k: int = 60
    vector_weight: float = 1.0
    text_weight: float = 1.0
    text_match_cap: int = TEXT_MATCH_CAP

    def label(self) -> str:
        """Short form for tables."""
        return (
            f"w_vec={self.vector_weight:g} w_text={self.text_weight:g} rrf_k={self.rrf_k}"
            f" cand={self.candidates} cap={self.text_match_cap}"
        )


def default_knobs(embedder: Any, language: str) -> Knobs:
    """What KnowledgeSearch uses for a knowledge base of this embedder and language."""
    from agents_pipeline.embeddings import fusion_weights

    vector_weight, text_weight = fusion_weights(embedder, language)
    return Knobs(vector_weight=vector_weight, text_weight=text_weight)


async def search(
    pool: Any,
    workspace_id: uuid.UUID,
    kb_id: uuid.UUID,
    vector: list[float],
    text: str,
    mode: str,
    knobs: Knobs,
    language: str,
) -> list[dict[str, Any]]:
    """One hybrid_search call, in its own transaction (it uses SET LOCAL)."""
    from storage import knowledge

    async with pool.connection() as conn, conn.transaction():
        return await knowledge.hybrid_search(
            conn,
            workspace_id=workspace_id,
            kb_ids=[kb_id],
            query_vector=vector,
            query_text=text,
            language=language,
            k=TOP,
            mode=mode,
            candidates=knobs.candidates,
            vector_weight=knobs.vector_weight,
            text_weight=knobs.text_weight,
            rrf_k=knobs.rrf_k,
            text_match_cap=knobs.text_match_cap,
        )


async def evaluate(
    pool: Any,
    workspace_id: uuid.UUID,
    kb_id: uuid.UUID,
    questions: Sequence[Question],
    vectors: dict[str, list[float]],
    knobs: Knobs,
    language: str,
    modes: Sequence[str] = MODES,
) -> dict[str, tuple[Scores, dict[str, list[dict[str, Any]]]]]:
    """Scores and raw results per mode for these knobs."""
    out: dict[str, tuple[Scores, dict[str, list[dict[str, Any]]]]] = {}
    for mode in modes:
        scores, results = Scores(), {}
        for q in questions:
            rows = await search(
                pool, workspace_id, kb_id, vectors[q.id], q.text, mode, knobs, language
            )
            results[q.id] = rows
            scores.ranks[q.id] = next(
                (
                    rank
                    for rank, r in enumerate(rows, 1)
                    if answers(r["document_title"], r["text"], q)
                ),
                None,
            )
        out[mode] = (scores, results)
    return out


def table(rows: Sequence[tuple[str, Scores]], questions: Sequence[Question], width: int) -> None:
    """recall@5 / MRR@10 for pt, en and all questions, one line per row."""
    groups = groups_of(questions)
    head = "".join(f"{g + f' ({len(groups[g])})':>20}" for g in GROUPS)
    print(f"{'':<{width}}{head}")
    print(f"{'':<{width}}" + f"{'recall@5 / MRR@10':>20}" * len(GROUPS))
    for label, s in rows:
        cells = "".join(f"{s.recall(groups[g]):>11.3f} / {s.mrr(groups[g]):.3f}" for g in GROUPS)
        print(f"{label:<{width}}{cells}")


def beats(hybrid: Scores, others: Sequence[Scores], ids: Sequence[str]) -> bool:
    """Hybrid at least as good as every other mode on both metrics, better on one of them."""
    return all(
        hybrid.recall(ids) >= o.recall(ids)
        and hybrid.mrr(ids) >= o.mrr(ids)
        and (hybrid.recall(ids) > o.recall(ids) or hybrid.mrr(ids) > o.mrr(ids))
        for o in others
    )


def explain(
    questions: Sequence[Question],
    runs: dict[str, tuple[Scores, dict[str, list[dict[str, Any]]]]],
) -> None:
    """Questions where hybrid ranks the answer worse than the better single mode, and why."""
    v, t, h = (runs[m][0] for m in MODES)
    worse = []
    for q in questions:
        best = min((r for r in (v.ranks[q.id], t.ranks[q.id]) if r is not None), default=None)
        if best is not None and (h.ranks[q.id] is None or h.ranks[q.id] > best):
            worse.append(q)
    text_hits = sum(1 for q in questions if runs["text"][1][q.id])
    print(
        f"\n  full-text returned something for {text_hits}/{len(questions)} questions (its OR"
        " query matches any chunk holding one of the question's words, so it always votes,"
        " right or wrong)"
    )
    if not worse:
        print("  hybrid never ranks an answer below the better single mode")
        return
    print(f"  questions where hybrid ranks the answer below the better single mode ({len(worse)}):")

    def fmt(r: int | None) -> str:
        return "-" if r is None else str(r)

    for q in worse:
        print(
            f"    {q.id:<6} vector {fmt(v.ranks[q.id]):>2}  text {fmt(t.ranks[q.id]):>2}"
            f"  hybrid {fmt(h.ranks[q.id]):>2}   {q.text[:70]}"
        )


# --- runs ------------------------------------------------------------------------------


SWEEP: list[Knobs] = [
    Knobs(),
    Knobs(rrf_k=30),
    Knobs(candidates=20),
    Knobs(candidates=100),
    *(Knobs(text_weight=w) for w in (0.25, 0.5, 0.75, 1.5, 2.0, 3.0)),
    *(Knobs(vector_weight=w) for w in (0.5,)),
    Knobs(text_weight=0.5, rrf_k=30),
    Knobs(vector_weight=0.5, rrf_k=30),
    Knobs(text_match_cap=10),
    Knobs(text_match_cap=20),
    Knobs(text_match_cap=40),
]


async def run_embedder(
    pg_url: str,
    name: str,
    documents: dict[str, bytes],
    questions: Sequence[Question],
    *,
    language: str,
    sweep: bool,
    extra: Sequence[Knobs],
) -> dict[str, Any]:
    """Ingest with one embedder, evaluate the three modes, sweep the knobs if needed."""
    from agents_pipeline.embeddings import get_embedder
    from storage.db import open_pool

    embedder = get_embedder(name)
    t0 = time.perf_counter()
    await embedder.warm_up()
    load_s = time.perf_counter() - t0
    pool = await open_pool(pg_url, max_size=2)
    try:
        ws = await create_workspace(pool)
        kb = await create_kb(pool, ws, embedder, language)
        stats = await ingest_directly(pool, ws, kb, documents, embedder)
        query_ms = []
        vectors: dict[str, list[float]] = {}
        for q in questions:
            t0 = time.perf_counter()
            vectors[q.id] = await embedder.embed_query(q.text)
            query_ms.append((time.perf_counter() - t0) * 1000)
        print(
            f"\n=== {name}: {embedder.model} — {stats.documents} documents, {stats.chunks} chunks,"
            f" {stats.model_tokens} model tokens; load {load_s:.1f} s, chunking"
            f" {stats.plan_s:.2f} s, embedding {stats.embed_s:.2f} s"
            f" ({stats.chunks / stats.embed_s:.1f} chunks/s), writing {stats.write_s:.2f} s,"
            f" query embedding median {statistics.median(query_ms):.1f} ms"
        )
        knobs = default_knobs(embedder, language)
        runs = await evaluate(pool, ws, kb, questions, vectors, knobs, language)
        print(
            f"\nhybrid_search as KnowledgeSearch calls it ({knobs.label()}), KB language"
            f" {language!r}"
        )
        table([(m, runs[m][0]) for m in MODES], questions, 10)
        all_ids = groups_of(questions)["all"]
        ok = beats(runs["hybrid"][0], [runs["vector"][0], runs["text"][0]], all_ids)
        print(f"\n  hybrid beats both on all questions: {'YES' if ok else 'NO'}")
        result: dict[str, Any] = {
            "model": embedder.model,
            "chunks": stats.chunks,
            "knobs": knobs.label(),
            "defaults": {m: runs[m][0].ranks for m in MODES},
            "beats": ok,
        }
        if not ok or sweep:
            explain(questions, runs)
            print("\nknob sweep (hybrid mode; text only where the cap changes)")
            rows: list[tuple[str, Scores]] = []
            seen: set[str] = set()
            for k in [*SWEEP, *extra]:
                if k.label() in seen:
                    continue
                seen.add(k.label())
                modes = (
                    ("text", "hybrid")
                    if k.text_match_cap != Knobs().text_match_cap
                    else ("hybrid",)
                )
                r = await evaluate(pool, ws, kb, questions, vectors, k, language, modes)
                if "text" in r:
                    rows.append((f"text only, cap={k.text_match_cap}", r["text"][0]))
                rows.append((k.label(), r["hybrid"][0]))
            table(rows, questions, 56)
            result["sweep"] = {label: s.ranks for label, s in rows}
        return result
    finally:
        await pool.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--embedder", choices=("local", "multilingual"), default="local")
    p.add_argument("--both", action="store_true", help="run local and multilingual")
    p.add_argument("--language", default="pt", help="knowledge base language (pt)")
    p.add_argument("--sweep", action="store_true", help="sweep the knobs even if hybrid wins")
    p.add_argument(
        "--knobs",
        action="append",
        default=[],
        metavar="C,K,WV,WT",
        help="an extra sweep point: candidates, RRF k, vector and text weights (repeatable)",
    )
    p.add_argument("--json", type=Path, help="also write the ranks to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation for one or both embedders."""
    args = parse_args(argv)
    extra = []
    for spec in args.knobs:
        c, k, wv, wt = spec.split(",")
        extra.append(
            Knobs(candidates=int(c), rrf_k=int(k), vector_weight=float(wv), text_weight=float(wt))
        )
    names = ["local", "multilingual"] if args.both else [args.embedder]
    documents = load_documents()
    questions = load_questions()
    groups = groups_of(questions)
    print(
        f"ops/eval: {len(documents)} documents, {len(questions)} questions"
        f" ({len(groups['pt'])} pt, {len(groups['en'])} en)"
    )
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with postgres() as pg:
        for name in names:
            results[name] = asyncio.run(
                run_embedder(
                    pg.url,
                    name,
                    documents,
                    questions,
                    language=args.language,
                    sweep=args.sweep,
                    extra=extra,
                )
            )
    print(f"\ntook {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
