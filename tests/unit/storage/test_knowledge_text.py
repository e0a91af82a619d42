"""What full-text search is given: folded text without the stop words folding would hide."""

from __future__ import annotations

import pytest

from storage.knowledge import fold, search_text


def test_fold_strips_accents_and_case() -> None:
    assert fold("Horário de FUNCIONAMENTO às Três") == "horario de funcionamento as tres"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # Accented stop words, and the same typed without accents, are gone.
        ("Você não entrega pão até às 22h?", ["entrega", "pao", "22h?"]),
        ("voce nao entrega pao ate as 22h?", ["entrega", "pao", "22h?"]),
        ("Também já está pronto", ["pronto"]),
        # Inside e-mails, URLs and hyphenated words nothing is removed.
        ("nao@padaria.com.br so-isso www.ja.com", ["nao@padaria.com.br", "so-isso", "www.ja.com"]),
    ],
)
def test_portuguese_stop_words_are_removed_before_folding(text: str, words: list[str]) -> None:
    assert search_text(text, "pt").split() == words


def test_other_languages_keep_their_own_lists() -> None:
    # "não" is a word like any other in an English knowledge base (no list removes it).
    assert search_text("The café não", "en").split() == ["the", "cafe", "nao"]
    assert search_text("¿Qué más pan tenéis?", "es").split() == ["¿", "pan", "?"]
    assert search_text("Für Brot", "de-AT").split() == ["brot"]
