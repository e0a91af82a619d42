"""The offline responder: deterministic, extractive, and good enough in Portuguese."""

from __future__ import annotations

from uuid import uuid4

import pytest

from agents_pipeline.llm import (
    DEFAULT_FALLBACK,
    answer_offline,
    count_tokens,
    fallback_reply,
    guess_language,
)
from streams.contracts import RetrievedChunk


def chunk(text: str, title: str, score: float = 0.8) -> RetrievedChunk:
    """A retrieved passage for tests."""
    return RetrievedChunk(
        chunk_id=uuid4(),
        document_id=uuid4(),
        document_title=title,
        text=text,
        score=score,
        position=0,
    )


STORE = chunk(
    "A Padaria Pão Quente fica na Rua das Flores, 120, no Centro. "
    "O horário de funcionamento é de segunda a sábado, das 7h às 19h. "
    "Aos domingos abrimos só pela manhã.\n"
    "Aceitamos Pix, cartão de débito e crédito.",
    "Informações da loja",
)
DELIVERY = chunk(
    "Fazemos entregas em todo o bairro. A taxa de entrega é R$ 5,00 e o prazo é de 40 minutos.",
    "Entregas",
)


def test_picks_the_relevant_sentence_for_a_portuguese_question() -> None:
    answer = answer_offline(
        user_text="Qual o horário de atendimento?", chunks=[STORE, DELIVERY], fallback_text=None
    )
    assert answer.text == (
        'Segundo "Informações da loja": O horário de funcionamento é de segunda a sábado, '
        "das 7h às 19h. [1]"
    )
    assert answer.source == STORE


@pytest.mark.parametrize(
    "question", ["qual o HORARIO de vocês?", "Horário?", "que HORÁRIO vcs abrem"]
)
def test_matching_ignores_case_and_accents(question: str) -> None:
    answer = answer_offline(user_text=question, chunks=[STORE], fallback_text=None)
    assert "O horário de funcionamento é de segunda a sábado" in answer.text


def test_chooses_the_passage_that_answers_not_just_the_first() -> None:
    answer = answer_offline(
        user_text="Quanto custa a taxa de entrega?", chunks=[STORE, DELIVERY], fallback_text=None
    )
    assert answer.source == DELIVERY
    assert "A taxa de entrega é R$ 5,00" in answer.text
    assert answer.text.endswith("[1]")


def test_stems_meet_across_word_forms() -> None:
    answer = answer_offline(user_text="Vocês aceitam pix?", chunks=[STORE], fallback_text=None)
    assert "Aceitamos Pix, cartão de débito e crédito." in answer.text


def test_stopwords_alone_do_not_pick_a_sentence() -> None:
    # Only stopwords overlap: the top passage's opening is quoted.
    answer = answer_offline(user_text="o que é de vocês?", chunks=[STORE], fallback_text=None)
    assert "A Padaria Pão Quente fica na Rua das Flores, 120, no Centro." in answer.text


def test_same_input_same_output() -> None:
    def ask() -> object:
        return answer_offline(
            user_text="Que horas abrem no sábado?", chunks=[STORE, DELIVERY], fallback_text=None
        )

    first = ask()
    assert all(ask() == first for _ in range(5))


def test_english_question_gets_an_english_lead_in() -> None:
    answer = answer_offline(user_text="Do you accept Pix?", chunks=[STORE], fallback_text=None)
    assert answer.text.startswith('According to "Informações da loja": ')
    assert "Aceitamos Pix" in answer.text


def test_no_chunks_uses_the_fallback_text() -> None:
    answer = answer_offline(
        user_text="Qual o preço do bolo?", chunks=[], fallback_text="Vou chamar um atendente."
    )
    assert answer.text == "Vou chamar um atendente."
    assert answer.source is None


def test_no_chunks_and_no_fallback_uses_a_default_in_the_user_language() -> None:
    pt = answer_offline(user_text="Qual o preço do bolo?", chunks=[], fallback_text=None)
    en = answer_offline(user_text="What is the price of the cake?", chunks=[], fallback_text="")
    assert pt.text == "Desculpe, não encontrei essa informação." == DEFAULT_FALLBACK["pt"]
    assert en.text == DEFAULT_FALLBACK["en"]


def test_reports_tokens_counted_with_tiktoken() -> None:
    question = "Qual o horário de atendimento?"
    answer = answer_offline(user_text=question, chunks=[STORE, DELIVERY], fallback_text=None)
    assert answer.completion_tokens == count_tokens(answer.text)
    assert answer.prompt_tokens == (
        count_tokens(question) + count_tokens(STORE.text) + count_tokens(DELIVERY.text)
    )


def test_long_sentences_are_capped() -> None:
    long = chunk("O horário " + "muito " * 300 + "longo.", "Longo")
    answer = answer_offline(user_text="horário", chunks=[long], fallback_text=None)
    assert len(answer.text) < 700
    assert answer.text.endswith("… [1]")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Qual o horário de atendimento?", "pt"),
        ("oi, vcs entregam?", "pt"),
        ("Não entendi", "pt"),
        ("What time do you open?", "en"),
        ("Hello, can I pay with a card?", "en"),
        ("Pix", "pt"),
    ],
)
def test_guess_language(text: str, language: str) -> None:
    assert guess_language(text) == language


def test_fallback_reply_prefers_the_agent_text() -> None:
    assert fallback_reply("  Um momento!  ", "What?") == "Um momento!"
    assert fallback_reply(None, "Where are you?") == DEFAULT_FALLBACK["en"]
