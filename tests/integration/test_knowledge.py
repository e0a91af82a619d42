"""Knowledge: upload → ingestion in the stream → hybrid search → cited answers.

Uses the session's real worker (MiniLM loaded once in it) and the gateway's search
API (MiniLM loaded once in the test process).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import aiohttp
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Gateway, Tenant, make_tenant, wait_until
from tests.integration.helpers import count_rows, create_channel
from tests.integration.test_pipeline import make_agent, out_messages
from tests.unit.agents_pipeline.knowledge.samples import encrypt_pdf, make_docx, make_pdf

INGEST_TIMEOUT = 120.0  # the first document also waits for the worker to load the model


async def new_kb(gw: Gateway, t: Tenant, name: str = "FAQ", language: str = "pt") -> str:
    """A knowledge base with the local embedder."""
    status, kb = await gw.call(
        "POST",
        "/api/v1/rag/knowledge-bases",
        key=t.key,
        workspace=t.id,
        json={"name": name, "language": language, "embedding": "local"},
    )
    assert status == 201, kb
    assert kb["dimensions"] == 384 and kb["embedding_model"] == "all-MiniLM-L6-v2"
    return kb["id"]


async def upload(
    gw: Gateway,
    t: Tenant,
    kb: str,
    filename: str,
    data: bytes,
    mime: str = "application/octet-stream",
) -> tuple[int, dict]:
    """A multipart upload."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=mime)
    async with gw.http.post(
        f"{gw.url}/api/v1/rag/knowledge-bases/{kb}/documents",
        data=form,
        headers={"Authorization": f"Bearer {t.key}", "X-Workspace-ID": t.id},
    ) as r:
        return r.status, await r.json()


async def wait_doc(gw: Gateway, t: Tenant, kb: str, doc: str) -> dict:
    """Wait until a document leaves pending/processing."""

    async def done() -> dict | None:
        _, d = await gw.call(
            "GET", f"/api/v1/rag/knowledge-bases/{kb}/documents/{doc}", key=t.key, workspace=t.id
        )
        return d if d["status"] in ("ready", "failed") else None

    return await wait_until(done, timeout=INGEST_TIMEOUT, interval=0.3)


async def search(gw: Gateway, t: Tenant, kbs: list[str], query: str, k: int = 5) -> Any:
    """The search API's answer."""
    status, body = await gw.call(
        "POST",
        "/api/v1/rag/search",
        key=t.key,
        workspace=t.id,
        json={"knowledge_base_ids": kbs, "query": query, "k": k},
    )
    return status, body


def qa_csv() -> bytes:
    """A CSV of question-answer pairs."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["pergunta", "resposta"])
    w.writerow(["Vocês entregam aos domingos?", "Sim, entregamos aos domingos das 8h às 12h."])
    w.writerow(["Aceitam vale-refeição?", "Aceitamos Alelo, Sodexo e VR em todas as lojas."])
    return buf.getvalue().encode()


FORMATS = [
    (
        "horarios.txt",
        "O horário de funcionamento da padaria é das 6h às 20h, de segunda a "
        "sábado.\n\nAos feriados abrimos das 7h às 13h.".encode(),
        "text/plain",
        "Qual o horário de funcionamento?",
        "6h às 20h",
    ),
    (
        "bolos.md",
        "# Bolos\n\n## Encomendas\n\nBolos de aniversário precisam de 48 horas de "
        "antecedência e sinal de 50%.\n".encode(),
        "text/markdown",
        "Com quanto tempo preciso encomendar um bolo de aniversário?",
        "48 horas",
    ),
    (
        "estacionamento.html",
        "<html><body><script>var x=1;</script><h1>Estacionamento</h1>"
        "<p>Temos estacionamento gratuito para clientes por até 1 hora.</p></body></html>".encode(),
        "text/html",
        "O estacionamento é gratuito?",
        "estacionamento gratuito",
    ),
    (
        "cafe.pdf",
        make_pdf(
            [
                [
                    "Cafe especial da casa",
                    "O cafe coado custa 7 reais e o espresso duplo custa 9 reais.",
                ]
            ]
        ),
        "application/pdf",
        "Quanto custa o espresso duplo?",
        "espresso duplo",
    ),
    (
        "trocas.docx",
        make_docx(),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "Em quantos dias posso trocar um produto?",
        "30 dias",
    ),
    ("faq.csv", qa_csv(), "text/csv", "Vocês aceitam vale-refeição?", "Alelo"),
    (
        "faq.json",
        json.dumps(
            [
                {
                    "question": "Do you have gluten-free bread?",
                    "answer": "Yes, gluten-free bread is baked every Tuesday.",
                }
            ]
        ).encode(),
        "application/json",
        "gluten-free bread",
        "every Tuesday",
    ),
]


async def test_each_format_is_ingested_and_found(
    gateway: Gateway, tenant: Tenant, worker: Any, pool: AsyncConnectionPool
) -> None:
    kb = await new_kb(gateway, tenant)
    docs = {}
    for filename, data, mime, _, _ in FORMATS:
        status, doc = await upload(gateway, tenant, kb, filename, data, mime)
        assert status == 202 and doc["status"] == "pending", doc
        docs[filename] = doc["id"]
    for filename, _, _, question, expected in FORMATS:
        doc = await wait_doc(gateway, tenant, kb, docs[filename])
        assert doc["status"] == "ready" and doc["chunks"] >= 1, doc
        status, found = await search(gateway, tenant, [kb], question)
        assert status == 200, found
        top = found["items"][0]
        assert top["document_id"] == docs[filename], (filename, found["items"][:2])
        assert expected in top["text"] and top["score"] > 0
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT max(tokens) AS m FROM chunks WHERE knowledge_base_id = %s", (kb,)
        )
        assert (await cur.fetchone())["m"] <= 200


async def test_duplicate_delete_and_reupload(gateway: Gateway, tenant: Tenant, worker: Any) -> None:
    kb = await new_kb(gateway, tenant)
    body = {
        "title": "Entrega",
        "text": "Entregamos em todo o bairro de Pinheiros em até 40 minutos, com taxa de 5 reais.",
    }
    status, doc = await gateway.call(
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb}/documents",
        key=tenant.key,
        workspace=tenant.id,
        json=body,
    )
    assert status == 202
    assert (await wait_doc(gateway, tenant, kb, doc["id"]))["status"] == "ready"
    status, again = await gateway.call(
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb}/documents",
        key=tenant.key,
        workspace=tenant.id,
        json=body,
    )
    assert status == 200 and again["id"] == doc["id"] and again["duplicate"] is True
    _, found = await search(gateway, tenant, [kb], "Qual a taxa de entrega em Pinheiros?")
    assert found["items"] and found["items"][0]["document_id"] == doc["id"]
    status, _ = await gateway.call(
        "DELETE",
        f"/api/v1/rag/knowledge-bases/{kb}/documents/{doc['id']}",
        key=tenant.key,
        workspace=tenant.id,
    )
    assert status == 204
    _, found = await search(gateway, tenant, [kb], "Qual a taxa de entrega em Pinheiros?")
    assert found["items"] == []  # gone at once
    status, new = await gateway.call(
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb}/documents",
        key=tenant.key,
        workspace=tenant.id,
        json=body,
    )
    assert status == 202 and new["id"] != doc["id"]
    assert (await wait_doc(gateway, tenant, kb, new["id"]))["status"] == "ready"


async def test_isolation_across_workspaces_and_bases(gateway: Gateway, worker: Any) -> None:
    a = await make_tenant(gateway, "KB-A")
    b = await make_tenant(gateway, "KB-B")
    kb_a = await new_kb(gateway, a)
    kb_a2 = await new_kb(gateway, a, "outra")
    kb_b = await new_kb(gateway, b)
    text = {"title": "Segredo", "text": "A senha do wi-fi da loja é croissant2024."}
    _, doc = await gateway.call(
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb_a}/documents",
        key=a.key,
        workspace=a.id,
        json=text,
    )
    assert (await wait_doc(gateway, a, kb_a, doc["id"]))["status"] == "ready"
    status, _ = await search(gateway, b, [kb_a], "senha do wi-fi")
    assert status == 404
    status, found = await search(gateway, b, [kb_b], "senha do wi-fi croissant2024")
    assert status == 200 and found["items"] == []
    _, found = await search(gateway, a, [kb_a2], "senha do wi-fi croissant2024")
    assert found["items"] == []  # another base of the same workspace
    for method, path in [
        ("GET", f"/api/v1/rag/knowledge-bases/{kb_a}"),
        ("GET", f"/api/v1/rag/knowledge-bases/{kb_a}/documents/{doc['id']}"),
        ("DELETE", f"/api/v1/rag/knowledge-bases/{kb_a}/documents/{doc['id']}"),
    ]:
        assert (await gateway.call(method, path, key=b.key, workspace=b.id))[0] == 404


async def test_bad_documents_fail_with_a_reason(
    gateway: Gateway, tenant: Tenant, worker: Any
) -> None:
    kb = await new_kb(gateway, tenant)
    bad = [
        ("vazio.txt", b"", "empty"),
        ("corrompido.pdf", b"%PDF-1.4 garbage \x00\x01 not a pdf", "corrupt"),
        ("secreto.pdf", encrypt_pdf(make_pdf([["Texto secreto"]]), user_password="x"), "encrypted"),
        ("programa.exe", b"MZ\x90\x00binary", "unsupported_type"),
        ("espacos.txt", b"   \n\n\t  \n", None),
        ("quebrado.docx", b"PK\x03\x04 truncated zip", "corrupt"),
    ]
    ids = {}
    for filename, data, _ in bad:
        status, doc = await upload(gateway, tenant, kb, filename, data)
        assert status == 202, (filename, doc)
        ids[filename] = doc["id"]
    for filename, _, code in bad:
        doc = await wait_doc(gateway, tenant, kb, ids[filename])
        assert doc["status"] == "failed", (filename, doc)
        assert doc["error"] and doc["chunks"] == 0
        if code:
            assert doc["error"].startswith(code), (filename, doc["error"])
    # The worker is still alive: a good document after them is ingested.
    _, good = await gateway.call(
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb}/documents",
        key=tenant.key,
        workspace=tenant.id,
        json={"title": "ok", "text": "Pão francês sai às 6h."},
    )
    assert (await wait_doc(gateway, tenant, kb, good["id"]))["status"] == "ready"


async def test_agent_answers_citing_its_source(
    gateway: Gateway, tenant: Tenant, worker: Any, pool: AsyncConnectionPool
) -> None:
    kb = await new_kb(gateway, tenant)
    _, doc = await gateway.call(
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb}/documents",
        key=tenant.key,
        workspace=tenant.id,
        json={
            "title": "Horários",
            "text": "Horários\n\nNo domingo a padaria abre das 7h às "
            "12h. Nos feriados abrimos das 7h às 13h.\n\nAs entregas são feitas de moto.",
        },
    )
    assert (await wait_doc(gateway, tenant, kb, doc["id"]))["status"] == "ready"
    agent_id = await make_agent(
        pool, tenant.id, model="offline", knowledge_base_ids=[uuid.UUID(kb)]
    )
    ch = await create_channel(gateway, tenant, "sandbox", {}, agent_id=agent_id)
    status, _ = await gateway.call(
        "POST",
        f"/api/v1/webhooks/sandbox/{ch['id']}",
        key=tenant.key,
        workspace=tenant.id,
        json={"from": "cliente", "text": "Que horas abre no domingo?"},
    )
    assert status == 200

    async def replied() -> list[dict]:
        rows = await out_messages(pool, ch["id"])
        return rows if rows and rows[0]["status"] == "sent" else []

    reply = (await wait_until(replied, timeout=INGEST_TIMEOUT))[0]
    assert "7h às 12h" in reply["text"] and "[1]" in reply["text"]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT outcome, sources FROM agent_runs WHERE message_id = %s", (reply["in_reply_to"],)
        )
        run = await cur.fetchone()
    assert run["outcome"] == "offline"
    assert [s["document_id"] for s in run["sources"]] == [doc["id"]]
    assert (
        await count_rows(pool, "SELECT count(*) FROM chunks WHERE document_id = %s", doc["id"]) >= 1
    )


async def test_sweep_finds_documents_left_waiting(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    from storage import knowledge

    kb = await new_kb(gateway, tenant, "sweep")
    async with pool.connection() as conn:
        doc, _ = await knowledge.add_document(
            conn,
            workspace_id=uuid.UUID(tenant.id),
            kb_id=uuid.UUID(kb),
            title="perdido",
            filename="p.txt",
            mime_type="text/plain",
            content=b"texto",
            content_hash="sweep-1",
        )
        assert doc["id"] not in [
            r["id"] for r in await knowledge.pending_documents(conn, older_than_seconds=60)
        ]
        await conn.execute("ALTER TABLE documents DISABLE TRIGGER documents_updated_at")
        await conn.execute(
            "UPDATE documents SET updated_at = now() - interval '1 hour' WHERE id = %s",
            (doc["id"],),
        )
        await conn.execute("ALTER TABLE documents ENABLE TRIGGER documents_updated_at")
        rows = await knowledge.pending_documents(conn, older_than_seconds=60)
    row = next(r for r in rows if r["id"] == doc["id"])
    assert str(row["workspace_id"]) == tenant.id and str(row["knowledge_base_id"]) == kb
