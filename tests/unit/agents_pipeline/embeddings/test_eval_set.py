"""ops/eval stays a usable retrieval eval set: answers exist, and survive chunking."""

from __future__ import annotations

from collections import Counter

import pytest

from agents_pipeline.llm.tokens import count_tokens
from ops.bench.embed_compare import (
    answers,
    chunk_documents,
    load_documents,
    load_questions,
    split_paragraphs,
    squash,
)


def test_documents_are_a_few_thousand_words_mostly_portuguese() -> None:
    documents = load_documents()
    words = sum(len(text.split()) for text in documents.values())
    assert 8 <= len(documents) <= 12
    assert 4000 <= words <= 8000
    assert any(name.endswith(".txt") for name in documents)


def test_questions_cover_both_languages_and_kinds() -> None:
    questions = load_questions()
    langs = Counter(q.lang for q in questions)
    kinds = Counter(q.kind for q in questions)
    assert langs["pt"] >= 28 and langs["en"] >= 8
    assert kinds["paraphrase"] >= 10 and kinds["keyword"] >= 5
    assert len({q.id for q in questions}) == len(questions)


def test_every_answer_is_in_its_document_exactly_once() -> None:
    documents = {name: squash(text) for name, text in load_documents().items()}
    for q in load_questions():
        assert q.relevant, q.id
        for document, needle in q.relevant:
            assert documents[document].count(needle) == 1, (q.id, document, needle)


@pytest.mark.parametrize("splitter", ["pipeline", "paragraph"])
def test_every_answer_survives_chunking(splitter: str) -> None:
    chunks, _ = chunk_documents(load_documents(), 150, splitter)
    for q in load_questions():
        assert any(answers(chunk, q) for chunk in chunks), q.id


def test_splitter_keeps_chunks_under_the_limit_with_their_heading() -> None:
    sentence = "O pão de fermentação natural sai do forno às 10h e às 16h todos os dias."
    text = "# Pães\n\n" + " ".join([sentence] * 12) + "\n\nOutro parágrafo curto."
    chunks = split_paragraphs(text, 60, count_tokens)
    assert len(chunks) > 2
    assert all(count_tokens(chunk) <= 60 for chunk in chunks)
    assert all(chunk.startswith("Pães\n\n") for chunk in chunks)
