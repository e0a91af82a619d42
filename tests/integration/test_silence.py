"""Never silence: every embedder name works end to end through the REST API, and a failing
embedder or LLM still leaves the customer with a reply (the run says what failed).

This module runs its own worker (the session's makes room for it: same consumer group)
and gateway, both pointed at one fake OpenAI-compatible server for chat and embeddings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr

from omnichat.settings import Settings
from tests.conftest import Gateway, Stack, Tenant, make_tenant, start_gateway, wait_until
from tests.fakes.openai_api import FakeOpenAI
from tests.integration.helpers import WorkerProcess, create_channel
from tests.integration.test_pipeline import out_messages

KEY = "sk-silence"
INGEST_TIMEOUT = 240.0  # the worker loads MiniLM and e5 on first use
EMBEDDING_MODEL = "text-embedding-3-small"  # 1536 dimensions, as the API knows it
LLM_ATTEMPTS = 4  # OMNICHAT_LLM_MAX_RETRIES (3) + 1
EMBEDDING_ATTEMPTS = 4  # the embeddings client's retries (3) + 1
FALLBACK = "Um atendente humano vai te responder em breve."


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fake() -> AsyncIterator[FakeOpenAI]:
    """Chat and embeddings (1536 dimensions, like text-embedding-3-small)."""
    async with FakeOpenAI(api_key=KEY, embedding_dim=1536) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(settings: Settings, migrated: str, fake: FakeOpenAI) -> AsyncIterator[Gateway]:
    """A gateway that knows the embeddings endpoint (to create `openai` knowledge bases)."""
    local = settings.model_copy(
        update={"embedding_base_url": fake.base_url, "embedding_api_key": SecretStr(KEY)}
    )
    runner, url, app = await start_gateway(local)
    async with aiohttp.ClientSession() as http:
        yield Gateway(url, http, app, local)
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def silence_worker(
    worker: WorkerProcess, settings: Settings, stack: Stack, fake: FakeOpenAI
) -> AsyncIterator[WorkerProcess]:
    """A worker whose LLM and embeddings are the fake's, in the session worker's group."""
    worker.stop()
    local = settings.model_copy(
        update={"llm_base_url": fake.base_url, "llm_api_key": SecretStr(KEY)}
    )
    mine = WorkerProcess(
        local,
        stack.tmp / "worker-silence.log",
        worker_id=worker.worker_id,
        extra_env={
            "OMNICHAT_EMBEDDING_BASE_URL": fake.base_url,
            "OMNICHAT_EMBEDDING_API_KEY": KEY,
            "OMNICHAT_EMBEDDING_MODEL": EMBEDDING_MODEL,
        },
    ).start()
    try:
        yield mine
    finally:
        mine.stop()
        worker.start()


async def api(gw: Gateway, t: Tenant, method: str, path: str, body: Any = None) -> Any:
    """A call that must succeed; its JSON answer."""
    status, answer = await gw.call(method, path, key=t.key, workspace=t.id, json=body)
    assert status < 300, (method, path, status, answer)
    return answer


async def bound_agent(gw: Gateway, t: Tenant, **version: Any) -> tuple[str, dict]:
    """An agent with a published version, and a sandbox channel bound to it."""
    agent = await api(gw, t, "POST", "/api/v1/agents/", {"name": "Atendente"})
    v = await api(
        gw,
        t,
        "POST",
        f"/api/v1/agents/{agent['id']}/versions",
        {"system_prompt": "Você atende a Padaria Trigo.", **version},
    )
    await api(gw, t, "POST", f"/api/v1/agents/{agent['id']}/versions/{v['id']}/publish")
    ch = await create_channel(gw, t, "sandbox", {}, agent_id=agent["id"])
    return agent["id"], ch


async def ask(gw: Gateway, t: Tenant, pool: Any, ch: dict, text: str) -> dict:
    """Send a customer's message; the reply once it is sent."""
    await api(gw, t, "POST", f"/api/v1/webhooks/sandbox/{ch['id']}", {"from": "ana", "text": text})

    async def replied() -> dict | None:
        rows = await out_messages(pool, ch["id"])
        return rows[0] if rows and rows[0]["status"] == "sent" else None

    return await wait_until(replied, timeout=INGEST_TIMEOUT)


async def run_of(gw: Gateway, t: Tenant, agent_id: str) -> dict:
    """The agent's only run, as the API shows it."""
    runs = await api(gw, t, "GET", f"/api/v1/agents/{agent_id}/runs")
    [run] = runs["items"]
    return run


async def kb_with(gw: Gateway, t: Tenant, embedding: str, title: str, text: str) -> str:
    """A knowledge base with that embedder holding one ready document."""
    kb = await api(
        gw,
        t,
        "POST",
        "/api/v1/rag/knowledge-bases",
        {"name": f"FAQ {embedding}", "language": "pt", "embedding": embedding},
    )
    doc = await api(
        gw,
        t,
        "POST",
        f"/api/v1/rag/knowledge-bases/{kb['id']}/documents",
        {"title": title, "text": text},
    )

    async def done() -> dict | None:
        d = await api(gw, t, "GET", f"/api/v1/rag/knowledge-bases/{kb['id']}/documents/{doc['id']}")
        return d if d["status"] in ("ready", "failed") else None

    finished = await wait_until(done, timeout=INGEST_TIMEOUT, interval=0.3)
    assert finished["status"] == "ready", finished
    return kb["id"]


CASES = {
    "local": (
        "Entregas",
        "Entregas\n\nFazemos entregas de bicicleta em Pinheiros com taxa de 6 reais.",
        "Qual a taxa de entrega em Pinheiros?",
        "taxa de 6 reais",
    ),
    "multilingual": (
        "Pagamentos",
        "Pagamentos\n\nAceitamos Pix, cartão de débito e vale-refeição em todas as lojas.",
        "Vocês aceitam Pix?",
        "Aceitamos Pix",
    ),
    "openai": (
        "Encomendas",
        "Encomendas\n\nBolos de aniversário precisam de 48 horas de antecedência.",
        "Com quanto tempo encomendo um bolo de aniversário?",
        "48 horas",
    ),
}


@pytest.mark.parametrize("embedding", sorted(CASES))
async def test_every_embedder_name_answers_citing_its_document(
    embedding: str, gw: Gateway, silence_worker: WorkerProcess, pool: Any, fake: FakeOpenAI
) -> None:
    t = await make_tenant(gw, f"Embedder {embedding}")
    title, text, question, expected = CASES[embedding]
    kb = await kb_with(gw, t, embedding, title, text)
    agent_id, ch = await bound_agent(gw, t, model="offline", knowledge_base_ids=[kb])
    reply = await ask(gw, t, pool, ch, question)
    assert expected in reply["text"] and "[1]" in reply["text"], reply["text"]
    run = await run_of(gw, t, agent_id)
    assert run["outcome"] == "offline" and run["retrieval_error"] is None
    assert [s["document_title"] for s in run["sources"]] == [title]


async def test_a_failing_embedder_still_gets_an_answer(
    gw: Gateway, silence_worker: WorkerProcess, pool: Any, fake: FakeOpenAI
) -> None:
    t = await make_tenant(gw, "Embedder down")
    title, text, question, _ = CASES["openai"]
    kb = await kb_with(gw, t, "openai", title, text)
    agent_id, ch = await bound_agent(gw, t, knowledge_base_ids=[kb])
    for _ in range(EMBEDDING_ATTEMPTS):
        fake.enqueue(500, endpoint="embeddings")
    reply = await ask(gw, t, pool, ch, question)
    assert fake.pending_answers == 0
    # The LLM answered without sources (the fake cites [1] only when it is given some).
    assert reply["text"] == f"Resposta simulada para: {question}"
    run = await run_of(gw, t, agent_id)
    assert run["outcome"] == "ok" and run["sources"] == []
    assert run["retrieval_error"].startswith("http_500"), run


async def test_a_failing_llm_sends_the_fallback_text(
    gw: Gateway, silence_worker: WorkerProcess, pool: Any, fake: FakeOpenAI
) -> None:
    t = await make_tenant(gw, "LLM down")
    agent_id, ch = await bound_agent(gw, t, fallback_text=FALLBACK)
    for _ in range(LLM_ATTEMPTS):
        fake.enqueue(500, endpoint="chat")
    reply = await ask(gw, t, pool, ch, "Vocês abrem no feriado?")
    assert fake.pending_answers == 0
    assert reply["text"] == FALLBACK
    run = await run_of(gw, t, agent_id)
    assert run["outcome"] == "error" and run["error"].startswith("http_500"), run

    # Without a version's fallback text, the workspace's.
    other = await make_tenant(gw, "LLM down 2")
    status, _ = await gw.call(
        "PATCH",
        f"/api/v1/tenants/workspaces/{other.id}",
        key=gw.settings.admin_token.get_secret_value() if gw.settings.admin_token else None,
        json={"fallback_text": "Volto já!"},
    )
    assert status == 200
    _, ch2 = await bound_agent(gw, other)
    for _ in range(LLM_ATTEMPTS):
        fake.enqueue(500, endpoint="chat")
    reply = await ask(gw, other, pool, ch2, "Tem sonho de creme?")
    assert fake.pending_answers == 0
    assert reply["text"] == "Volto já!"
