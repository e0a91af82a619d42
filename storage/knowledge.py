"""Knowledge bases, documents and chunks (vectors + full-text), and hybrid search.

Search runs inside one SQL statement: the workspace and knowledge-base filters are
part of both the vector and the full-text query (never applied afterwards), and the
two rankings are fused with reciprocal rank fusion.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from uuid import UUID

from pgvector import Vector

from storage.db import Conn
from storage.pagination import keyset, order_by, page

Row = dict[str, Any]
KB_COLS = (
    "id, workspace_id, name, language, embedding, embedding_model, dimensions, created_at,"
    " updated_at"
)
DOC_COLS = (
    "id, workspace_id, knowledge_base_id, title, filename, mime_type, content_hash, size_bytes,"
    " status, error, chunk_count, created_at, updated_at"
)
# PostgreSQL text-search configurations by knowledge-base language.
TS_CONFIGS = {
    "pt": "portuguese",
    "en": "english",
    "es": "spanish",
    "fr": "french",
    "de": "german",
    "it": "italian",
}
RRF_K = 60  # the usual reciprocal-rank-fusion constant
# The most chunks the full-text side ranks per search: it matches with the question's rarest
# lexemes first while their chunk counts (kb_terms) fit, and stops the GIN match there; the
# ranking then uses every lexeme. Ranking a match costs ~10 us (its tsv is read), so this
# bounds the text side (~3 ms) whatever the size of the knowledge base. Rarest-first is also
# the IDF that ts_rank lacks: over 100k chunks (ops/bench/rag.py) the text side's top 10 held
# 95% relevant chunks at a cap of 100-300, 88% at 1000, 25% uncapped.
TEXT_MATCH_CAP = 300

# Stop words that carry accents, from PostgreSQL's (Snowball's) stop lists. Text is folded
# before to_tsvector (our PostgreSQL builds have no unaccent extension), and folded, these no
# longer match the server's list: "não" would become a lexeme "nao" that matches half the
# knowledge base. So ``search_text`` removes them, by their folded spelling, before the
# server sees the text (a query typed without accents, "voce", loses them too).
ACCENTED_STOP_WORDS = {
    "portuguese": "não à já também só até você às nós vocês está estão estávamos estivéramos"
    " estivéssemos há hão houvéramos houvéssemos houverá houverão houveríamos são éramos"
    " fôramos fôssemos será serão seríamos tém tínhamos tivéramos tivéssemos terá terão"
    " teríamos",
    "spanish": "más sí también mí qué él tú mío mía míos mías estás está estáis están esté"
    " estés estéis estén estaré estarás estará estaréis estarán estaría estarías estaríamos"
    " estaríais estarían estábamos estuviéramos estuviésemos habéis hayáis habré habrás"
    " habrá habréis habrán habría habrías habríamos habríais habrían había habías habíamos"
    " habíais habían hubiéramos hubiésemos seáis seré serás será seréis serán sería serías"
    " seríamos seríais serían éramos fuéramos fuésemos tenéis tengáis tendré tendrás tendrá"
    " tendréis tendrán tendría tendrías tendríamos tendríais tendrían tenía tenías teníamos"
    " teníais tenían tuviéramos tuviésemos",
    "french": "même à été étée étées étés étant étante étants étantes êtes étais était étions"
    " étiez étaient fûmes fûtes fût eûmes eûtes eût",
    "german": "für können könnte über während würde würden",
    "italian": "perché più avrò avrà è sarò sarà farò farà starò starà",
}


def ts_config(language: str) -> str:
    """The text-search configuration of a language (``simple`` when we have none)."""
    return TS_CONFIGS.get(language.split("-")[0].lower(), "simple")


def fold(text: str) -> str:
    """Lower-case and strip accents, so that "horario" finds "horário" (no unaccent here)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _stop_pattern(words: str) -> re.Pattern[str]:
    """Whole folded words only: not inside an e-mail, a URL, a hyphenated or dotted token."""
    alternatives = "|".join(sorted({re.escape(fold(w)) for w in words.split()}, key=len)[::-1])
    return re.compile(rf"(?<![\w@./'-])(?:{alternatives})(?![\w@/'-]|\.\w)")


_STOP_PATTERNS = {config: _stop_pattern(words) for config, words in ACCENTED_STOP_WORDS.items()}


def search_text(text: str, language: str) -> str:
    """What ``to_tsvector`` is given, for chunks and questions alike: folded, and without the
    stop words that folding would hide from the server's stop list."""
    folded = fold(text)
    pattern = _STOP_PATTERNS.get(ts_config(language))
    return pattern.sub(" ", folded) if pattern is not None else folded


async def create_kb(
    conn: Conn,
    *,
    workspace_id: UUID,
    name: str,
    language: str,
    embedding: str,
    embedding_model: str,
    dimensions: int,
) -> Row:
    """A knowledge base; its language and embedder are fixed from now on."""
    cur = await conn.execute(
        "INSERT INTO knowledge_bases (workspace_id, name, language, embedding, embedding_model,"
        f" dimensions) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {KB_COLS}",
        (workspace_id, name, language, embedding, embedding_model, dimensions),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def get_kb(conn: Conn, *, workspace_id: UUID, kb_id: UUID) -> Row | None:
    """One knowledge base of the workspace."""
    cur = await conn.execute(
        f"SELECT {KB_COLS} FROM knowledge_bases WHERE id = %s AND workspace_id = %s",
        (kb_id, workspace_id),
    )
    return await cur.fetchone()


async def get_kbs(conn: Conn, *, workspace_id: UUID, kb_ids: list[UUID]) -> list[Row]:
    """The workspace's knowledge bases among these ids (others' ids are silently absent)."""
    cur = await conn.execute(
        f"SELECT {KB_COLS} FROM knowledge_bases WHERE id = ANY(%s) AND workspace_id = %s",
        (kb_ids, workspace_id),
    )
    return await cur.fetchall()


async def list_kbs(
    conn: Conn, *, workspace_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """The workspace's knowledge bases, oldest first."""
    cond, params = keyset(cursor, descending=False)
    cur = await conn.execute(
        f"SELECT {KB_COLS} FROM knowledge_bases WHERE workspace_id = %s AND {cond}"
        f" {order_by(descending=False)} LIMIT %s",
        [workspace_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def delete_kb(conn: Conn, *, workspace_id: UUID, kb_id: UUID) -> bool:
    """Delete a knowledge base with its documents and chunks."""
    cur = await conn.execute(
        "DELETE FROM knowledge_bases WHERE id = %s AND workspace_id = %s", (kb_id, workspace_id)
    )
    return cur.rowcount == 1


async def add_document(
    conn: Conn,
    *,
    workspace_id: UUID,
    kb_id: UUID,
    title: str,
    filename: str | None,
    mime_type: str | None,
    content: bytes,
    content_hash: str,
) -> tuple[Row, bool]:
    """Store an upload as ``pending``; identical content in the same base returns the
    existing document (created=False) instead of ingesting it twice."""
    cur = await conn.execute(
        "INSERT INTO documents (workspace_id, knowledge_base_id, title, filename, mime_type,"
        " content, content_hash, size_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (knowledge_base_id, content_hash) DO NOTHING RETURNING {DOC_COLS}",
        (workspace_id, kb_id, title, filename, mime_type, content, content_hash, len(content)),
    )
    row = await cur.fetchone()
    if row is not None:
        return row, True
    cur = await conn.execute(
        f"SELECT {DOC_COLS} FROM documents WHERE knowledge_base_id = %s AND content_hash = %s",
        (kb_id, content_hash),
    )
    return await cur.fetchone(), False  # type: ignore[return-value]


async def get_document(conn: Conn, *, workspace_id: UUID, kb_id: UUID, doc_id: UUID) -> Row | None:
    """One document (without its bytes)."""
    cur = await conn.execute(
        f"SELECT {DOC_COLS} FROM documents WHERE id = %s AND knowledge_base_id = %s"
        " AND workspace_id = %s",
        (doc_id, kb_id, workspace_id),
    )
    return await cur.fetchone()


async def list_documents(
    conn: Conn, *, workspace_id: UUID, kb_id: UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """A knowledge base's documents, oldest first."""
    cond, params = keyset(cursor, descending=False)
    cur = await conn.execute(
        f"SELECT {DOC_COLS} FROM documents WHERE workspace_id = %s AND knowledge_base_id = %s"
        f" AND {cond} {order_by(descending=False)} LIMIT %s",
        [workspace_id, kb_id, *params, limit + 1],
    )
    return page(await cur.fetchall(), limit)


async def delete_document(conn: Conn, *, workspace_id: UUID, kb_id: UUID, doc_id: UUID) -> bool:
    """Delete a document; its chunks go with it (FK cascade), in the same statement."""
    cur = await conn.execute(
        "DELETE FROM documents WHERE id = %s AND knowledge_base_id = %s AND workspace_id = %s",
        (doc_id, kb_id, workspace_id),
    )
    return cur.rowcount == 1


async def claim_document(conn: Conn, *, doc_id: UUID) -> Row | None:
    """Take a pending (or interrupted) document for ingestion, with its bytes and base.

    ``processing`` documents are taken again: a worker that died mid-document left
    no chunk committed (chunks are written in the same transaction that marks it
    ``ready``), so it is simply redone.
    """
    cur = await conn.execute(
        "UPDATE documents d SET status = 'processing', attempts = attempts + 1, error = NULL"
        " FROM knowledge_bases k WHERE d.id = %s AND k.id = d.knowledge_base_id"
        " AND d.status IN ('pending', 'processing')"
        " RETURNING d.id, d.workspace_id, d.knowledge_base_id, d.title, d.filename,"
        " d.mime_type, d.content, d.attempts, k.language, k.embedding, k.embedding_model,"
        " k.dimensions",
        (doc_id,),
    )
    return await cur.fetchone()


async def finish_document(conn: Conn, *, doc: Row, chunks: list[dict[str, Any]]) -> bool:
    """Write every chunk and mark the document ready, atomically; False if it was deleted."""
    config = ts_config(doc["language"])
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT 1 FROM documents WHERE id = %s AND status = 'processing' FOR UPDATE",
            (doc["id"],),
        )
        if await cur.fetchone() is None:
            return False
        await conn.execute("DELETE FROM chunks WHERE document_id = %s", (doc["id"],))
        # One statement for all of them: the kb_terms trigger (once per statement) then
        # counts the document's lexemes in one upsert, not one per chunk.
        await conn.execute(
            "INSERT INTO chunks (workspace_id, knowledge_base_id, document_id, position, text,"
            " heading, tokens, dimensions, embedding, tsv)"
            f" SELECT %s, %s, %s, p, t, h, n, d, e, to_tsvector('{config}', s) FROM"
            " unnest(%s::int[], %s::text[], %s::text[], %s::int[], %s::int[], %b::vector[],"
            " %s::text[]) AS v(p, t, h, n, d, e, s)",
            (
                doc["workspace_id"],
                doc["knowledge_base_id"],
                doc["id"],
                [ch["position"] for ch in chunks],
                [ch["text"] for ch in chunks],
                [ch.get("heading") for ch in chunks],
                [ch["tokens"] for ch in chunks],
                [len(ch["embedding"]) for ch in chunks],
                [Vector(ch["embedding"]) for ch in chunks],
                [search_text(ch["text"], doc["language"]) for ch in chunks],
            ),
        )
        await conn.execute(
            "UPDATE documents SET status = 'ready', chunk_count = %s, content = NULL,"
            " error = NULL WHERE id = %s",
            (len(chunks), doc["id"]),
        )
    return True


async def fail_document(conn: Conn, *, doc_id: UUID, error: str) -> None:
    """Mark a document failed with the reason (its bytes are dropped: it will not be retried)."""
    await conn.execute(
        "UPDATE documents SET status = 'failed', error = %s, content = NULL WHERE id = %s",
        (error, doc_id),
    )


async def pending_documents(conn: Conn, *, older_than_seconds: float) -> list[Row]:
    """Documents stuck pending or processing (a lost ingest event, a dead worker), with the
    ids an ingest event needs."""
    cur = await conn.execute(
        "SELECT id, workspace_id, knowledge_base_id FROM documents"
        " WHERE status IN ('pending', 'processing')"
        " AND updated_at < now() - make_interval(secs => %s) ORDER BY created_at LIMIT 100",
        (older_than_seconds,),
    )
    return await cur.fetchall()


async def hybrid_search(
    conn: Conn,
    *,
    workspace_id: UUID,
    kb_ids: list[UUID],
    query_vector: list[float] | None,
    query_text: str,
    language: str,
    k: int,
    mode: str = "hybrid",
    candidates: int = 40,
    ef_search: int = 100,
    vector_weight: float = 1.0,
    text_weight: float = 1.0,
    rrf_k: int = RRF_K,
    text_match_cap: int = TEXT_MATCH_CAP,
) -> list[Row]:
    """Top-k chunks by weighted RRF of vector (cosine, HNSW) and full-text ranks.

    ``mode``: ``hybrid``, ``vector`` or ``text``. Each side ranks ``candidates``
    chunks; a chunk's score is the sum of weight/(rrf_k + rank) over the sides it is in.
    The text side ranks (ts_rank, every lexeme of the question) only the chunks that
    hold its rarest lexemes, as many as fit in ``text_match_cap`` chunks by the
    knowledge base's term counts (kb_terms), and never more than that many. Equal ranks
    go to the chunk with fewer distinct lexemes (the denser match), not to a random id.
    """
    dims = len(query_vector) if query_vector is not None else 0
    config = ts_config(language)
    ctes = ""
    parts = []
    params: list[Any] = []
    if mode in ("hybrid", "text"):
        # The question's lexemes with their chunk counts in these knowledge bases (those in no
        # chunk are dropped). ``mq``, what the GIN index matches, keeps the rarest while their
        # counts add up to the cap (the rarest always); ``q``, what ranks, keeps them all.
        ctes = (
            "terms AS (SELECT w.lexeme, coalesce(sum(s.chunks), 0) AS n"
            f" FROM unnest(to_tsvector('{config}', %s)) w LEFT JOIN kb_terms s"
            " ON s.knowledge_base_id = ANY(%s) AND s.lexeme = w.lexeme GROUP BY w.lexeme),"
            " kept AS (SELECT '''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''')"
            " || '''' AS quoted, n, sum(n) OVER (ORDER BY n, lexeme) AS running"
            " FROM terms WHERE n > 0),"
            " tq AS (SELECT string_agg(quoted, ' | ')::tsquery AS q,"
            " (string_agg(quoted, ' | ') FILTER (WHERE running <= %s OR running = n))::tsquery"
            " AS mq FROM kept), "
        )
        params += [search_text(query_text, language), kb_ids, text_match_cap]
    if mode in ("hybrid", "vector") and query_vector is not None:
        await conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
        parts.append(
            f"SELECT id, row_number() OVER (ORDER BY embedding::vector({dims}) <=> %s) AS rank,"
            " %s::float8 AS weight FROM (SELECT id, embedding FROM chunks WHERE workspace_id = %s"
            f" AND knowledge_base_id = ANY(%s) AND dimensions = {dims}"
            f" ORDER BY embedding::vector({dims}) <=> %s LIMIT %s) v"
        )
        vec = Vector(query_vector)
        params += [vec, vector_weight, workspace_id, kb_ids, vec, candidates]
    if mode in ("hybrid", "text"):
        parts.append(
            "SELECT id, row_number() OVER (ORDER BY r DESC, n, id) AS rank, %s::float8 AS weight"
            " FROM (SELECT id, ts_rank(tsv, (SELECT q FROM tq)) AS r, length(tsv) AS n FROM ("
            " SELECT id, tsv FROM chunks WHERE workspace_id = %s AND knowledge_base_id = ANY(%s)"
            " AND tsv @@ (SELECT mq FROM tq) LIMIT %s) m ORDER BY r DESC, n, id LIMIT %s) t"
        )
        params += [text_weight, workspace_id, kb_ids, text_match_cap, candidates]
    if not parts:
        return []
    union = " UNION ALL ".join(f"({p})" for p in parts)
    cur = await conn.execute(
        f"WITH {ctes}ranked AS ({union}), fused AS (SELECT id,"
        " sum(weight / (%s + rank)) AS score FROM ranked GROUP BY id ORDER BY score DESC, id"
        " LIMIT %s)"
        " SELECT c.id AS chunk_id, c.document_id, d.title AS document_title, c.text,"
        " f.score::float AS score, c.position FROM fused f JOIN chunks c ON c.id = f.id"
        " JOIN documents d ON d.id = c.document_id ORDER BY f.score DESC, c.id",
        [*params, rrf_k, k],
    )
    return await cur.fetchall()
