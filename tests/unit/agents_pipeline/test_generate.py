"""generate_reply for every outcome, and the cost it records."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from agents_pipeline.generate import generate_reply
from agents_pipeline.llm import (
    DEFAULT_FALLBACK,
    OFFLINE_MODEL,
    AgentSpec,
    HistoryTurn,
    LLMClient,
    estimate_cost_usd,
    price_for,
)
from streams.contracts import RetrievedChunk
from tests.fakes.openai_api import FakeOpenAI, chat_completion_body

API_KEY = "sk-test"
DEFAULT_MODEL = "gpt-4o-mini"


def chunk(text: str, title: str) -> RetrievedChunk:
    """A retrieved passage for tests."""
    return RetrievedChunk(
        chunk_id=uuid4(),
        document_id=uuid4(),
        document_title=title,
        text=text,
        score=0.8,
        position=0,
    )


HOURS = chunk("O horário de funcionamento é de segunda a sábado, das 7h às 19h.", "Horários")
PAYMENTS = chunk("Aceitamos Pix e cartão.", "Pagamentos")
AGENT = AgentSpec(
    system_prompt="Você é o assistente da Padaria Pão Quente.",
    fallback_text="Não sei responder agora; um atendente vai falar com você.",
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """A fresh fake endpoint per test."""
    async with FakeOpenAI(api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def llm(fake: FakeOpenAI) -> AsyncIterator[LLMClient]:
    """A client on the fake endpoint, with tiny backoff."""
    async with LLMClient(
        base_url=fake.base_url,
        api_key=API_KEY,
        timeout=2.0,
        max_retries=2,
        backoff_base=0.001,
        backoff_max=0.005,
    ) as client:
        yield client


async def test_ok_records_usage_cost_and_cited_sources(fake: FakeOpenAI, llm: LLMClient) -> None:
    result = await generate_reply(
        agent=AGENT,
        user_text="Qual o horário?",
        history=[],
        chunks=[HOURS, PAYMENTS],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "ok"
    assert result.error is None
    assert result.reply_text == "Resposta simulada para: Qual o horário? [1]"
    assert result.sources == [HOURS]
    assert result.model == DEFAULT_MODEL
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.cost_usd == estimate_cost_usd(
        DEFAULT_MODEL, result.prompt_tokens, result.completion_tokens
    )
    assert result.cost_usd > 0
    [request] = fake.requests
    assert request.json["model"] == DEFAULT_MODEL
    assert request.json["temperature"] == AGENT.temperature
    assert request.json["max_tokens"] == AGENT.max_tokens
    assert "[2] Pagamentos\nAceitamos Pix e cartão." in request.json["messages"][0]["content"]


async def test_agent_model_and_history_reach_the_request(fake: FakeOpenAI, llm: LLMClient) -> None:
    agent = AGENT.model_copy(update={"model": "gpt-4.1-mini", "temperature": 0.0})
    history = [
        HistoryTurn(role="user", text="Oi"),
        HistoryTurn(role="assistant", text="Olá! Como posso ajudar?"),
    ]
    result = await generate_reply(
        agent=agent,
        user_text="Vocês abrem domingo?",
        history=history,
        chunks=[],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    [request] = fake.requests
    assert request.json["model"] == "gpt-4.1-mini"
    assert request.json["temperature"] == 0.0
    assert [m["content"] for m in request.json["messages"][1:]] == [
        "Oi",
        "Olá! Como posso ajudar?",
        "Vocês abrem domingo?",
    ]
    assert result.model == "gpt-4.1-mini"
    assert result.sources == []


async def test_sources_follow_the_answer_markers(fake: FakeOpenAI, llm: LLMClient) -> None:
    fake.enqueue(200, chat_completion_body("Aceitamos Pix [2]; abrimos às 7h [1]. [9]"))
    result = await generate_reply(
        agent=AGENT,
        user_text="Como pago e quando abrem?",
        history=[],
        chunks=[HOURS, PAYMENTS],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "ok"
    assert result.sources == [PAYMENTS, HOURS]


async def test_answer_citing_nothing_records_no_sources(fake: FakeOpenAI, llm: LLMClient) -> None:
    fake.enqueue(200, chat_completion_body("Abrimos às 7h."))
    result = await generate_reply(
        agent=AGENT,
        user_text="Qual o horário?",
        history=[],
        chunks=[HOURS],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "ok"
    assert result.reply_text == "Abrimos às 7h."
    assert result.sources == []


async def test_llm_failure_answers_with_the_fallback_text(fake: FakeOpenAI, llm: LLMClient) -> None:
    for _ in range(3):
        fake.enqueue(500)
    result = await generate_reply(
        agent=AGENT,
        user_text="Qual o horário?",
        history=[],
        chunks=[HOURS],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "error"
    assert result.reply_text == AGENT.fallback_text
    assert result.error is not None and result.error.startswith("http_500: ")
    assert result.sources == []
    assert (result.prompt_tokens, result.completion_tokens, result.cost_usd) == (0, 0, 0.0)
    assert len(fake.requests) == 3


async def test_rejected_request_without_fallback_text_uses_default(
    fake: FakeOpenAI, llm: LLMClient
) -> None:
    fake.enqueue(400)
    agent = AGENT.model_copy(update={"fallback_text": None})
    result = await generate_reply(
        agent=agent,
        user_text="Qual o horário?",
        history=[],
        chunks=[HOURS],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "error"
    assert result.reply_text == DEFAULT_FALLBACK["pt"]
    assert result.error is not None and "http_400" in result.error
    assert len(fake.requests) == 1


async def test_empty_llm_answer_falls_back(fake: FakeOpenAI, llm: LLMClient) -> None:
    fake.enqueue(200, chat_completion_body("", finish_reason="content_filter", completion_tokens=0))
    result = await generate_reply(
        agent=AGENT,
        user_text="Qual o horário?",
        history=[],
        chunks=[HOURS],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "fallback"
    assert result.reply_text == AGENT.fallback_text
    assert result.prompt_tokens == 10  # billed even though unusable
    assert result.sources == []


async def test_nothing_to_answer_falls_back_without_a_call(
    fake: FakeOpenAI, llm: LLMClient
) -> None:
    result = await generate_reply(
        agent=AGENT,
        user_text="   ",
        history=[],
        chunks=[HOURS],
        llm=llm,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "fallback"
    assert result.reply_text == AGENT.fallback_text
    assert result.cost_usd == 0.0
    assert fake.requests == []


async def test_no_llm_answers_offline_from_the_sources() -> None:
    result = await generate_reply(
        agent=AGENT,
        user_text="Qual o horário de atendimento?",
        history=[],
        chunks=[PAYMENTS, HOURS],
        llm=None,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "offline"
    assert result.model == OFFLINE_MODEL
    assert result.reply_text == (
        'Segundo "Horários": O horário de funcionamento é de segunda a sábado, das 7h às 19h. [1]'
    )
    assert result.sources == [HOURS]
    assert result.cost_usd == 0.0
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.error is None


async def test_no_llm_and_no_sources_gives_the_fallback_text() -> None:
    result = await generate_reply(
        agent=AGENT,
        user_text="Vocês vendem bolo de cenoura?",
        history=[],
        chunks=[],
        llm=None,
        default_model=DEFAULT_MODEL,
    )
    assert result.outcome == "offline"
    assert result.reply_text == AGENT.fallback_text
    assert result.sources == []


def test_cost_estimation_prices_prompt_and_completion_separately() -> None:
    assert estimate_cost_usd("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    assert estimate_cost_usd("gpt-4o-mini", 0, 1_000_000) == pytest.approx(0.60)
    assert estimate_cost_usd("gpt-4o", 1000, 500) == pytest.approx(0.0025 + 0.005)
    assert estimate_cost_usd("gpt-4.1", 2_000, 1_000) == pytest.approx(0.004 + 0.008)
    assert estimate_cost_usd("gpt-4.1-mini", 1_000_000, 1_000_000) == pytest.approx(2.0)
    assert estimate_cost_usd("gpt-3.5-turbo", 1_000_000, 1_000_000) == pytest.approx(2.0)
    assert estimate_cost_usd(OFFLINE_MODEL, 10_000, 10_000) == 0.0


def test_model_names_match_snapshots_but_not_siblings() -> None:
    assert price_for("gpt-4o-mini-2024-07-18") == price_for("gpt-4o-mini")
    assert price_for("gpt-4o-2024-08-06") == price_for("gpt-4o")
    assert price_for("openai/gpt-4.1-mini") == price_for("gpt-4.1-mini")
    assert price_for("gpt-3.5-turbo-0125") == price_for("gpt-3.5-turbo")
    assert price_for("gpt-4.1-nano") is None
    assert price_for("gpt-4o-mini") != price_for("gpt-4o")


def test_unknown_model_costs_zero_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agents_pipeline.llm.pricing"):
        assert estimate_cost_usd("llama3.1:8b-test", 1000, 1000) == 0.0
        assert estimate_cost_usd("llama3.1:8b-test", 1000, 1000) == 0.0
    warnings = [r for r in caplog.records if "llama3.1:8b-test" in r.getMessage()]
    assert len(warnings) == 1
