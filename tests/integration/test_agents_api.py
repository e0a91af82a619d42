"""Agents and versions: drafts change, published versions do not; runs; workspace isolation."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from typing import Any

import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Gateway, Tenant, make_tenant
from tests.integration.helpers import create_channel
from tests.integration.test_conversations_api import T0, seed_conversation, seed_message


async def _call(
    gateway: Gateway, tenant: Tenant, method: str, path: str, json: Any = None
) -> tuple[int, Any]:
    return await gateway.call(method, path, key=tenant.key, workspace=tenant.id, json=json)


async def _agent(gateway: Gateway, tenant: Tenant, name: str = "Atendente") -> dict:
    status, agent = await _call(gateway, tenant, "POST", "/api/v1/agents/", {"name": name})
    assert status == 201, agent
    return agent


async def _version(gateway: Gateway, tenant: Tenant, agent_id: str, **fields: Any) -> dict:
    body = {"system_prompt": "Você é um atendente cordial.", **fields}
    status, version = await _call(
        gateway, tenant, "POST", f"/api/v1/agents/{agent_id}/versions", body
    )
    assert status == 201, version
    return version


async def _knowledge_base(pool: AsyncConnectionPool, tenant: Tenant) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO knowledge_bases (workspace_id, name, embedding_model, dimensions)"
            " VALUES (%s, 'FAQ', 'all-MiniLM-L6-v2', 384) RETURNING id",
            (tenant.id,),
        )
        return str((await cur.fetchone())["id"])


async def _audit_actions(pool: AsyncConnectionPool, tenant: Tenant) -> list[tuple[str, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT action, actor FROM audit_log WHERE workspace_id = %s"
            " AND object_type IN ('agent', 'agent_version') ORDER BY created_at, action",
            (tenant.id,),
        )
        return [(r["action"], r["actor"]) for r in await cur.fetchall()]


async def test_agent_crud(gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool) -> None:
    status, agent = await _call(
        gateway,
        tenant,
        "POST",
        "/api/v1/agents/",
        {"name": "Atendimento", "description": "Responde dúvidas de pedidos"},
    )
    assert status == 201, agent
    assert agent["name"] == "Atendimento" and agent["description"] == "Responde dúvidas de pedidos"
    assert agent["published_version_id"] is None
    uuid.UUID(agent["id"])
    assert agent["created_at"]

    second = await _agent(gateway, tenant, "Vendas")
    status, listed = await _call(gateway, tenant, "GET", "/api/v1/agents/?limit=1")
    assert status == 200 and [a["id"] for a in listed["items"]] == [agent["id"]]
    status, rest = await _call(
        gateway, tenant, "GET", f"/api/v1/agents/?limit=1&cursor={listed['next_cursor']}"
    )
    assert [a["id"] for a in rest["items"]] == [second["id"]] and rest["next_cursor"] is None

    path = f"/api/v1/agents/{agent['id']}"
    status, got = await _call(gateway, tenant, "GET", path)
    assert status == 200 and got == agent
    status, patched = await _call(
        gateway, tenant, "PATCH", path, {"name": "Suporte", "description": None}
    )
    assert status == 200 and patched["name"] == "Suporte" and patched["description"] is None
    status, body = await _call(gateway, tenant, "PATCH", path, {"name": None})
    assert status == 422 and body["error"]["code"] == "validation_error"

    status, _ = await _call(gateway, tenant, "DELETE", path)
    assert status == 204
    status, body = await _call(gateway, tenant, "GET", path)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _ = await _call(gateway, tenant, "DELETE", path)
    assert status == 404
    status, _ = await _call(gateway, tenant, "GET", "/api/v1/agents/not-a-uuid")
    assert status == 404

    actions = await _audit_actions(pool, tenant)
    assert [a for a, _ in actions] == [
        "agent.create",
        "agent.create",
        "agent.update",
        "agent.delete",
    ]
    assert {actor for _, actor in actions} == {tenant.key_id}


async def test_version_lifecycle(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    agent = await _agent(gateway, tenant)
    kb = await _knowledge_base(pool, tenant)
    base = f"/api/v1/agents/{agent['id']}/versions"

    v1 = await _version(
        gateway,
        tenant,
        agent["id"],
        model="gpt-4o-mini",
        temperature=0.7,
        max_tokens=300,
        knowledge_base_ids=[kb, kb],
        history_tokens=1500,
        fallback_text="Um momento, por favor.",
    )
    assert v1["number"] == 1 and v1["status"] == "draft" and v1["agent_id"] == agent["id"]
    assert v1["system_prompt"] == "Você é um atendente cordial."
    assert v1["model"] == "gpt-4o-mini" and v1["temperature"] == 0.7
    assert v1["max_tokens"] == 300 and v1["history_tokens"] == 1500
    assert v1["knowledge_base_ids"] == [kb]  # a base named twice is searched once
    assert v1["fallback_text"] == "Um momento, por favor." and v1["published_at"] is None

    # Defaults for everything left out.
    v2 = await _version(gateway, tenant, agent["id"])
    assert v2["number"] == 2 and v2["model"] is None and v2["knowledge_base_ids"] == []
    assert v2["temperature"] == 0.2 and v2["max_tokens"] == 512 and v2["history_tokens"] == 2000

    status, patched = await _call(
        gateway,
        tenant,
        "PATCH",
        f"{base}/{v1['id']}",
        {"system_prompt": "Seja breve.", "model": None, "knowledge_base_ids": []},
    )
    assert status == 200, patched
    assert patched["system_prompt"] == "Seja breve." and patched["model"] is None
    assert patched["knowledge_base_ids"] == [] and patched["temperature"] == 0.7

    status, published = await _call(gateway, tenant, "POST", f"{base}/{v1['id']}/publish")
    assert status == 200, published
    assert published["status"] == "published" and published["published_at"]
    assert published["system_prompt"] == "Seja breve."
    _, got = await _call(gateway, tenant, "GET", f"/api/v1/agents/{agent['id']}")
    assert got["published_version_id"] == v1["id"]

    # Immutable once published.
    status, body = await _call(
        gateway, tenant, "PATCH", f"{base}/{v1['id']}", {"system_prompt": "Mudou"}
    )
    assert status == 409 and body["error"]["code"] == "version_published"
    status, body = await _call(gateway, tenant, "PATCH", f"{base}/{v1['id']}", {})
    assert status == 409

    # Publishing again changes nothing.
    status, again = await _call(gateway, tenant, "POST", f"{base}/{v1['id']}/publish")
    assert status == 200 and again["published_at"] == published["published_at"]

    # Publishing v2 moves the agent to it; v1 stays published (and can be rolled back to).
    status, _ = await _call(gateway, tenant, "POST", f"{base}/{v2['id']}/publish")
    assert status == 200
    _, got = await _call(gateway, tenant, "GET", f"/api/v1/agents/{agent['id']}")
    assert got["published_version_id"] == v2["id"]
    status, _ = await _call(gateway, tenant, "POST", f"{base}/{v1['id']}/publish")
    _, got = await _call(gateway, tenant, "GET", f"/api/v1/agents/{agent['id']}")
    assert status == 200 and got["published_version_id"] == v1["id"]

    status, listed = await _call(gateway, tenant, "GET", f"{base}?limit=1")
    assert [v["number"] for v in listed["items"]] == [1] and listed["next_cursor"]
    status, rest = await _call(gateway, tenant, "GET", f"{base}?cursor={listed['next_cursor']}")
    assert [v["number"] for v in rest["items"]] == [2]
    status, one = await _call(gateway, tenant, "GET", f"{base}/{v2['id']}")
    assert status == 200 and one["status"] == "published"

    # A version id under another agent of the same workspace is not found there.
    other = await _agent(gateway, tenant, "Outro")
    for method, path in [
        ("GET", f"/api/v1/agents/{other['id']}/versions/{v1['id']}"),
        ("POST", f"/api/v1/agents/{other['id']}/versions/{v1['id']}/publish"),
        ("GET", f"{base}/{uuid.uuid4()}"),
        ("POST", f"/api/v1/agents/{uuid.uuid4()}/versions"),
    ]:
        status, body = await _call(
            gateway, tenant, method, path, {"system_prompt": "x"} if path.endswith("s") else None
        )
        assert status == 404, (method, path, body)

    actions = [a for a, _ in await _audit_actions(pool, tenant)]
    assert actions.count("agent_version.create") == 2
    assert actions.count("agent_version.update") == 1
    assert actions.count("agent_version.publish") == 3  # not the idempotent repeat


async def test_unknown_knowledge_base(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    agent = await _agent(gateway, tenant)
    other = await make_tenant(gateway, "Outra")
    foreign = await _knowledge_base(pool, other)
    mine = await _knowledge_base(pool, tenant)
    base = f"/api/v1/agents/{agent['id']}/versions"
    missing = str(uuid.uuid4())
    for ids, bad in (([missing], [missing]), ([mine, foreign], [foreign])):
        status, body = await _call(
            gateway, tenant, "POST", base, {"system_prompt": "x", "knowledge_base_ids": ids}
        )
        assert status == 422 and body["error"]["code"] == "unknown_knowledge_base", body
        assert body["error"]["details"]["knowledge_base_ids"] == bad
    draft = await _version(gateway, tenant, agent["id"], knowledge_base_ids=[mine])
    status, body = await _call(
        gateway, tenant, "PATCH", f"{base}/{draft['id']}", {"knowledge_base_ids": [foreign]}
    )
    assert status == 422 and body["error"]["code"] == "unknown_knowledge_base"
    _, listed = await _call(gateway, tenant, "GET", base)
    assert [v["knowledge_base_ids"] for v in listed["items"]] == [[mine]]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"system_prompt": ""},
        {"system_prompt": 5},
        {"system_prompt": "x", "temperature": 2.5},
        {"system_prompt": "x", "temperature": -0.1},
        {"system_prompt": "x", "max_tokens": 0},
        {"system_prompt": "x", "max_tokens": 16385},
        {"system_prompt": "x", "history_tokens": -1},
        {"system_prompt": "x", "history_tokens": 100001},
        {"system_prompt": "x", "knowledge_base_ids": ["not-a-uuid"]},
        {"system_prompt": "x", "knowledge_base_ids": None},
        {"system_prompt": "x", "unknown": True},
    ],
)
async def test_version_validation(
    gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool, body: dict
) -> None:
    agent = await _agent(gateway, tenant)
    base = f"/api/v1/agents/{agent['id']}/versions"
    status, err = await _call(gateway, tenant, "POST", base, body)
    assert status == 422 and err["error"]["code"] == "validation_error", (body, err)
    draft = await _version(gateway, tenant, agent["id"])
    if body:
        patch = {k: v for k, v in body.items() if k != "system_prompt"} or body
        status, err = await _call(gateway, tenant, "PATCH", f"{base}/{draft['id']}", patch)
        assert status == 422 and err["error"]["code"] == "validation_error", (patch, err)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM agent_versions WHERE agent_id = %s", (agent["id"],)
        )
        assert (await cur.fetchone())["n"] == 1


async def test_agent_validation(gateway: Gateway, tenant: Tenant) -> None:
    for body in ({}, {"name": ""}, {"name": "x" * 201}, {"name": "a", "published_version_id": 1}):
        status, err = await _call(gateway, tenant, "POST", "/api/v1/agents/", body)
        assert status == 422 and err["error"]["code"] == "validation_error", body
    status, err = await gateway.call(
        "POST", "/api/v1/agents/", key=tenant.key, workspace=tenant.id, data=b"{nope"
    )
    assert status == 400 and err["error"]["code"] == "invalid_json"


async def _insert_run(
    pool: AsyncConnectionPool,
    tenant: Tenant,
    agent_id: str,
    version_id: str,
    conversation_id: str,
    message_id: str,
    minute: int,
) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO agent_runs (workspace_id, agent_id, version_id, conversation_id,"
            " message_id, model, prompt_tokens, completion_tokens, latency_ms, cost_usd,"
            " sources, outcome, error, reply_text, trace_id, created_at)"
            " VALUES (%s, %s, %s, %s, %s, 'gpt-4o-mini', 120, 30, 850, 0.000123, %s,"
            " 'answered', NULL, 'Claro!', %s, %s) RETURNING id",
            (
                tenant.id,
                agent_id,
                version_id,
                conversation_id,
                message_id,
                Jsonb([{"document_title": "FAQ", "score": 0.82}]),
                secrets.token_hex(16),
                T0 + timedelta(minutes=minute),
            ),
        )
        return str((await cur.fetchone())["id"])


async def test_runs(gateway: Gateway, tenant: Tenant, pool: AsyncConnectionPool) -> None:
    agent = await _agent(gateway, tenant)
    other_agent = await _agent(gateway, tenant, "Outro")
    version = await _version(gateway, tenant, agent["id"])
    other_version = await _version(gateway, tenant, other_agent["id"])
    channel = await create_channel(gateway, tenant, "sandbox", {}, agent_id=agent["id"])
    conv = await seed_conversation(pool, tenant, channel["id"], "5511988887777")
    msgs = [
        await seed_message(pool, tenant, conv, text=f"pergunta {i}", created_at=T0)
        for i in range(3)
    ]
    runs = [
        await _insert_run(pool, tenant, agent["id"], version["id"], conv.conversation_id, m, i)
        for i, m in enumerate(msgs[:2])
    ]
    await _insert_run(
        pool, tenant, other_agent["id"], other_version["id"], conv.conversation_id, msgs[2], 9
    )

    path = f"/api/v1/agents/{agent['id']}/runs"
    status, page1 = await _call(gateway, tenant, "GET", f"{path}?limit=1")
    assert status == 200, page1
    assert [r["id"] for r in page1["items"]] == [runs[1]]  # newest first
    _, page2 = await _call(gateway, tenant, "GET", f"{path}?limit=1&cursor={page1['next_cursor']}")
    assert [r["id"] for r in page2["items"]] == [runs[0]] and page2["next_cursor"] is None

    run = page2["items"][0]
    assert run["version_id"] == version["id"]
    assert run["conversation_id"] == conv.conversation_id and run["message_id"] == msgs[0]
    assert run["model"] == "gpt-4o-mini" and run["outcome"] == "answered"
    assert run["prompt_tokens"] == 120 and run["completion_tokens"] == 30
    assert run["latency_ms"] == 850 and run["cost_usd"] == pytest.approx(0.000123)
    assert run["sources"] == [{"document_title": "FAQ", "score": 0.82}]
    assert run["error"] is None and run["created_at"].startswith("2026-01-05T12:00:00")

    status, _ = await _call(gateway, tenant, "GET", f"/api/v1/agents/{uuid.uuid4()}/runs")
    assert status == 404


async def test_isolation(gateway: Gateway, pool: AsyncConnectionPool) -> None:
    a = await make_tenant(gateway, "A")
    b = await make_tenant(gateway, "B")
    a_agent = await _agent(gateway, a, "Agente A")
    b_agent = await _agent(gateway, b, "Agente B")
    b_version = await _version(gateway, b, b_agent["id"])
    b_path = f"/api/v1/agents/{b_agent['id']}"
    v_path = f"{b_path}/versions/{b_version['id']}"

    for method, path, body in [
        ("GET", b_path, None),
        ("PATCH", b_path, {"name": "pwned"}),
        ("DELETE", b_path, None),
        ("GET", f"{b_path}/versions", None),
        ("POST", f"{b_path}/versions", {"system_prompt": "pwned"}),
        ("GET", v_path, None),
        ("PATCH", v_path, {"system_prompt": "pwned"}),
        ("POST", f"{v_path}/publish", None),
        ("GET", f"{b_path}/runs", None),
        # B's version under A's own agent: still not found.
        ("GET", f"/api/v1/agents/{a_agent['id']}/versions/{b_version['id']}", None),
        ("POST", f"/api/v1/agents/{a_agent['id']}/versions/{b_version['id']}/publish", None),
    ]:
        status, got = await _call(gateway, a, method, path, body)
        assert status == 404 and got["error"]["code"] == "not_found", (method, path, got)

    # A's key with B's workspace header: 403.
    status, _ = await gateway.call("GET", b_path, key=a.key, workspace=b.id)
    assert status == 403

    _, listed = await _call(gateway, a, "GET", "/api/v1/agents/?limit=200")
    assert [x["id"] for x in listed["items"]] == [a_agent["id"]]
    _, b_seen = await _call(gateway, b, "GET", v_path)
    assert b_seen["status"] == "draft" and b_seen["system_prompt"] != "pwned"
    _, b_agent_now = await _call(gateway, b, "GET", b_path)
    assert b_agent_now["name"] == "Agente B" and b_agent_now["published_version_id"] is None
