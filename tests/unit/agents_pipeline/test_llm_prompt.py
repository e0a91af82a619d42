"""Prompt assembly: numbered sources within budget, history trimmed from the oldest side."""

from __future__ import annotations

from uuid import uuid4

from agents_pipeline.llm import (
    HistoryTurn,
    PromptBuild,
    build_messages,
    cited_numbers,
    cited_sources,
    count_message_tokens,
    count_tokens,
)
from agents_pipeline.llm.prompt import NO_SOURCES_RULES
from streams.contracts import RetrievedChunk


def chunk(text: str, title: str = "Manual", score: float = 0.9) -> RetrievedChunk:
    """A retrieved passage for tests."""
    return RetrievedChunk(
        chunk_id=uuid4(),
        document_id=uuid4(),
        document_title=title,
        text=text,
        score=score,
        position=0,
    )


def turns(n: int) -> list[HistoryTurn]:
    """``n`` alternating turns, oldest first, each naming its index."""
    return [
        HistoryTurn(
            role="user" if i % 2 == 0 else "assistant",
            text=f"Mensagem número {i}: gostaria de saber sobre o pedido e a entrega.",
        )
        for i in range(n)
    ]


def build(**overrides: object) -> PromptBuild:
    """build_messages with defaults for the arguments a test does not care about."""
    args: dict[str, object] = {
        "system_prompt": "Você é o assistente da Padaria Pão Quente.",
        "history": [],
        "user_text": "Qual o horário de atendimento?",
        "chunks": [],
        "history_budget_tokens": 1000,
    }
    args.update(overrides)
    return build_messages(**args)  # type: ignore[arg-type]


def test_sources_are_numbered_in_the_system_message() -> None:
    chunks = [
        chunk("Abrimos de segunda a sábado, das 7h às 19h.", "Horários"),
        chunk("Entregamos em todo o bairro.", "Entregas"),
    ]
    result = build(chunks=chunks)
    system = result.messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("Você é o assistente da Padaria Pão Quente.")
    assert "[1] Horários\nAbrimos de segunda a sábado, das 7h às 19h." in system["content"]
    assert "[2] Entregas\nEntregamos em todo o bairro." in system["content"]
    assert "like [1] or [2]" in system["content"]
    assert "Portuguese" in system["content"]
    assert "do not know" in system["content"]
    assert result.sources == chunks


def test_no_sources_says_so() -> None:
    result = build(chunks=[])
    assert NO_SOURCES_RULES in result.messages[0]["content"]
    assert "[1]" not in result.messages[0]["content"]
    assert result.sources == []


def test_messages_end_with_the_user_text_and_estimate_matches() -> None:
    result = build(history=turns(2))
    assert result.messages[-1] == {"role": "user", "content": "Qual o horário de atendimento?"}
    assert [m["role"] for m in result.messages] == ["system", "user", "assistant", "user"]
    assert result.token_estimate == count_message_tokens(result.messages)


def test_context_budget_truncates_and_drops_lowest_ranked() -> None:
    long_text = "O horário de funcionamento da loja é das 8h às 18h. " * 200
    chunks = [chunk(long_text, f"Doc {i}") for i in range(10)]
    result = build(chunks=chunks, context_budget_tokens=300)
    system = result.messages[0]["content"]
    block = system[system.index("[1] Doc 0") :]
    assert count_tokens(block) <= 300
    assert 1 <= len(result.sources) < 10
    assert result.sources == chunks[: len(result.sources)]
    for n, source in enumerate(result.sources, start=1):
        assert f"[{n}] {source.document_title}\n" in block
    assert long_text.strip() not in block


def test_short_sources_stay_whole_while_long_ones_share_the_rest() -> None:
    short = chunk("Aceitamos Pix e cartão.", "Pagamentos")
    long = chunk("Trocas em até 30 dias com nota fiscal. " * 100, "Trocas")
    result = build(chunks=[long, short], context_budget_tokens=200)
    system = result.messages[0]["content"]
    assert result.sources == [long, short]
    assert "[2] Pagamentos\nAceitamos Pix e cartão." in system
    assert "[1] Trocas\nTrocas em até 30 dias" in system


def test_empty_chunks_are_not_numbered() -> None:
    useful = chunk("Abrimos às 7h.", "Horários")
    result = build(chunks=[chunk("   "), useful])
    assert result.sources == [useful]
    assert "[1] Horários" in result.messages[0]["content"]


def test_history_keeps_newest_turns_within_budget() -> None:
    history = turns(10)
    per_turn = 4 + count_tokens("assistant") + count_tokens(history[0].text)
    budget = per_turn * 3 + 2
    result = build(history=history, history_budget_tokens=budget)
    kept = result.messages[1:-1]
    assert result.history_turns_kept == len(kept) == 3
    assert [m["content"] for m in kept] == [t.text for t in history[-3:]]
    assert [m["role"] for m in kept] == [t.role for t in history[-3:]]
    used = sum(4 + count_tokens(m["role"]) + count_tokens(m["content"]) for m in kept)
    assert used <= budget


def test_history_budget_zero_keeps_no_turns_but_the_user_message() -> None:
    long_question = "Quero saber tudo sobre os produtos sem glúten. " * 100
    result = build(history=turns(4), history_budget_tokens=0, user_text=long_question)
    assert result.history_turns_kept == 0
    assert result.messages[-1]["content"] == long_question
    assert len(result.messages) == 2


def test_blank_history_turns_are_skipped() -> None:
    history = [HistoryTurn(role="user", text="Oi"), HistoryTurn(role="assistant", text="  ")]
    result = build(history=history)
    assert result.history_turns_kept == 1
    assert result.messages[1] == {"role": "user", "content": "Oi"}


def test_cited_sources_follow_markers() -> None:
    chunks = [chunk("a", "A"), chunk("b", "B"), chunk("c", "C")]
    text = "Abrimos às 7h [2]. Aceitamos Pix [1, 2]. Veja também [7] e [3][2]."
    assert cited_numbers(text) == [2, 1, 7, 3]
    assert cited_sources(text, chunks) == [chunks[1], chunks[0], chunks[2]]
    assert cited_sources("Sem fontes aqui.", chunks) == []
    assert cited_sources("[0] e [4]", chunks) == []
