"""hybrid_search in SQL: stop words, weighted fusion, the text side's cap, term counts.

Chunks are written with the production ``finish_document`` and hand-made vectors, so
the ranking each side produces is known in advance (no model is loaded).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from storage import knowledge

DIMS = 384


def axis(i: int) -> list[float]:
    """The unit vector along dimension ``i``."""
    v = [0.0] * DIMS
    v[i] = 1.0
    return v


async def make_kb(pool: AsyncConnectionPool, language: str = "pt") -> tuple[uuid.UUID, uuid.UUID]:
    """A workspace of its own and a knowledge base in it."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO workspaces (name) VALUES (%s) RETURNING id", (f"s-{uuid.uuid4().hex}",)
        )
        ws = (await cur.fetchone())["id"]
        kb = await knowledge.create_kb(
            conn,
            workspace_id=ws,
            name="kb",
            language=language,
            embedding="local",
            embedding_model="all-MiniLM-L6-v2",
            dimensions=DIMS,
        )
    return ws, kb["id"]


async def add_doc(
    pool: AsyncConnectionPool,
    ws: uuid.UUID,
    kb: uuid.UUID,
    title: str,
    chunks: list[tuple[str, list[float]]],
) -> uuid.UUID:
    """A ready document with these (text, vector) chunks, through the ingestion functions."""
    async with pool.connection() as conn:
        row, _ = await knowledge.add_document(
            conn,
            workspace_id=ws,
            kb_id=kb,
            title=title,
            filename=None,
            mime_type="text/plain",
            content=title.encode(),
            content_hash=hashlib.sha256(f"{kb}{title}".encode()).hexdigest(),
        )
        doc = await knowledge.claim_document(conn, doc_id=row["id"])
        assert doc is not None
        planned = [
            {"position": i, "text": text, "tokens": len(text.split()), "embedding": vec}
            for i, (text, vec) in enumerate(chunks)
        ]
        assert await knowledge.finish_document(conn, doc=doc, chunks=planned)
    return row["id"]


async def run(
    pool: AsyncConnectionPool,
    ws: uuid.UUID,
    kb: uuid.UUID,
    query: str,
    *,
    mode: str = "text",
    vector: list[float] | None = None,
    **kw: Any,
) -> list[str]:
    """The texts hybrid_search returns, best first."""
    async with pool.connection() as conn, conn.transaction():
        rows = await knowledge.hybrid_search(
            conn,
            workspace_id=ws,
            kb_ids=[kb],
            query_vector=vector,
            query_text=query,
            language="pt",
            k=10,
            mode=mode,
            **kw,
        )
    return [r["text"] for r in rows]


async def test_portuguese_stop_words_do_not_match(pool: AsyncConnectionPool) -> None:
    ws, kb = await make_kb(pool)
    chatter = "Você não sabe? Nós também não. Até já, está bem."
    bread = "Entregamos pão de queijo em Curitiba."
    await add_doc(pool, ws, kb, "doc", [(chatter, axis(0)), (bread, axis(1))])
    # Folded, "não", "você", "até" and "já" would be words that match the chatter.
    assert await run(pool, ws, kb, "Você não entrega pão de queijo até já?") == [bread]
    assert await run(pool, ws, kb, "voce nao entrega pao de queijo ate ja?") == [bread]
    assert await run(pool, ws, kb, "Você também não?") == []


async def test_weights_decide_which_side_leads(pool: AsyncConnectionPool) -> None:
    ws, kb = await make_kb(pool)
    near = "Chunk próximo da pergunta só pelo vetor."
    worded = "Fermentação natural do levain."
    await add_doc(pool, ws, kb, "doc", [(near, axis(0)), (worded, axis(1))])
    # Vector side: near 1st, worded 2nd; text side: worded alone. With rrf_k = 1:
    # near = wv/2, worded = wv/3 + wt/2.
    args = {"mode": "hybrid", "vector": axis(0), "rrf_k": 1}
    assert await run(pool, ws, kb, "levain", vector_weight=1.0, text_weight=0.25, **args) == [
        near,
        worded,
    ]
    assert await run(pool, ws, kb, "levain", vector_weight=0.25, text_weight=1.0, **args) == [
        worded,
        near,
    ]
    async with pool.connection() as conn, conn.transaction():
        rows = await knowledge.hybrid_search(
            conn,
            workspace_id=ws,
            kb_ids=[kb],
            query_vector=axis(0),
            query_text="levain",
            language="pt",
            k=10,
            vector_weight=1.0,
            text_weight=0.25,
            rrf_k=1,
        )
    assert [round(r["score"], 6) for r in rows] == [0.5, round(1 / 3 + 0.25 / 2, 6)]


async def test_text_side_ranks_only_chunks_of_the_rarest_words_within_the_cap(
    pool: AsyncConnectionPool,
) -> None:
    ws, kb = await make_kb(pool)
    common = [f"Farinha de trigo número {i}." for i in range(5)]
    rare = "Farinha de centeio integral."
    await add_doc(pool, ws, kb, "doc", [(t, axis(i)) for i, t in enumerate([*common, rare])])
    # Uncapped: every chunk with either word; the one with both leads.
    found = await run(pool, ws, kb, "farinha de centeio")
    assert found[0] == rare and sorted(found) == sorted([*common, rare])
    # centeio (1 chunk) fits a cap of 3, farinha (6 more) does not: only its chunk is ranked.
    assert await run(pool, ws, kb, "farinha de centeio", text_match_cap=3) == [rare]
    # The rarest word always matches, but never more chunks than the cap are ranked.
    assert len(await run(pool, ws, kb, "farinha", text_match_cap=2)) == 2
    # A word in no chunk takes no room in the budget.
    assert await run(pool, ws, kb, "centeio xilofone", text_match_cap=1) == [rare]


async def test_term_counts_follow_every_write(pool: AsyncConnectionPool) -> None:
    ws, kb = await make_kb(pool)

    async def count(word: str) -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT coalesce(sum(t.chunks), 0) AS n FROM kb_terms t,"
                " unnest(to_tsvector('portuguese', %s)) w"
                " WHERE t.knowledge_base_id = %s AND t.lexeme = w.lexeme",
                (word, kb),
            )
            return int((await cur.fetchone())["n"])

    first = await add_doc(pool, ws, kb, "a", [("centeio e aveia", axis(0)), ("centeio", axis(1))])
    await add_doc(pool, ws, kb, "b", [("aveia", axis(2))])
    assert (await count("centeio"), await count("aveia")) == (2, 2)
    async with pool.connection() as conn:
        assert await knowledge.delete_document(conn, workspace_id=ws, kb_id=kb, doc_id=first)
    assert (await count("centeio"), await count("aveia")) == (0, 1)
    async with pool.connection() as conn:
        assert await knowledge.delete_kb(conn, workspace_id=ws, kb_id=kb)
        cur = await conn.execute(
            "SELECT count(*) AS n FROM kb_terms WHERE knowledge_base_id = %s", (kb,)
        )
        assert (await cur.fetchone())["n"] == 0


async def test_any_question_text_is_safe(pool: AsyncConnectionPool) -> None:
    ws, kb = await make_kb(pool)
    odd = "C:\\pasta\\arquivo.txt, O'Reilly & filhos | !(x) <-> 'a':* \\ ''"
    await add_doc(pool, ws, kb, "doc", [(odd, axis(0)), ("Pão de queijo.", axis(1))])
    # tsquery operators and quotes in a question are words, never syntax.
    found = await run(pool, ws, kb, odd)
    assert found and found[0] == odd
    assert await run(pool, ws, kb, "") == []
