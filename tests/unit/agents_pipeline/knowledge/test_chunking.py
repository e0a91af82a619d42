"""Chunking: sizes, structure, overlap, question-answer pairs and the embedding model's cap."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from agents_pipeline.knowledge import (
    Block,
    Chunk,
    ExtractedDocument,
    chunk,
    extract,
    split_sentences,
)
from agents_pipeline.llm.tokens import count_tokens


def doc_of(*blocks: Block) -> ExtractedDocument:
    """A document made of these blocks."""
    return ExtractedDocument(title="Teste", format="md", blocks=list(blocks))


def markdown(text: str) -> ExtractedDocument:
    """A document extracted from Markdown, as the pipeline would."""
    return extract(text.encode(), filename="base.md")


def rules(n: int, topic: str = "troca") -> list[str]:
    """Distinct Portuguese sentences of about 20 tokens each."""
    return [
        f"A regra {i} de {topic} vale para pedidos feitos até o dia {i + 1} às 18h, ação!"
        for i in range(n)
    ]


def body(c: Chunk) -> str:
    """The text of a chunk without its heading path line."""
    return c.text.split("\n", 1)[1] if c.heading_path else c.text


def shared_edge(previous: str, following: str) -> str:
    """The longest start of ``following`` that ``previous`` ends with."""
    for size in range(min(len(previous), len(following)), 0, -1):
        if previous.endswith(following[:size]):
            return following[:size]
    return ""


def check_invariants(chunks: list[Chunk], max_tokens: int, *, full_path: bool = True) -> None:
    """What every chunk list must satisfy."""
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.tokens == count_tokens(c.text) <= max_tokens
        assert c.text.strip() and "\ufffd" not in c.text
        if c.heading_path and full_path:
            assert c.text.startswith(" > ".join(c.heading_path) + "\n")


# --- structure -------------------------------------------------------------------------


def test_heading_path_prefixes_each_chunk() -> None:
    doc = markdown(
        "# Horários\n\nAbrimos às 8h.\n\n## Feriados\n\nFechamos no Natal. 🎄\n\n"
        "# Trocas\n\nAté 30 dias."
    )
    chunks = chunk(doc)
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("Horários\nAbrimos às 8h.", ["Horários"]),
        ("Horários > Feriados\nFechamos no Natal. 🎄", ["Horários", "Feriados"]),
        ("Trocas\nAté 30 dias.", ["Trocas"]),
    ]
    check_invariants(chunks, 200)
    assert chunks[1].tokens == count_tokens("Horários > Feriados\nFechamos no Natal. 🎄")


def test_blocks_without_headings_have_no_prefix() -> None:
    chunks = chunk(doc_of(Block(kind="paragraph", text="Olá, tudo bem?")))
    assert [c.text for c in chunks] == ["Olá, tudo bem?"]
    assert chunks[0].heading_path == []


def test_list_items_and_rows_are_packed_as_lines() -> None:
    doc = markdown("# Pagamento\n\nAceitamos:\n\n- Pix\n- Cartão\n\n| Bandeira |\n|---|\n| Visa |")
    assert [c.text for c in chunk(doc)] == [
        "Pagamento\nAceitamos:\n- Pix\n- Cartão\nBandeira: Visa"
    ]


def test_empty_headings_are_kept_as_text() -> None:
    doc = markdown(
        "# Loja Açaí\n\n# Contato\n\n## Telefone: (11) 4002-8922\n\n## E-mail\n\nola@loja.com"
    )
    assert [c.text for c in chunk(doc)] == [
        "Loja Açaí",
        "Contato\nTelefone: (11) 4002-8922",
        "Contato > E-mail\nola@loja.com",
    ]


def test_no_chunk_spans_a_heading_and_no_overlap_crosses_one() -> None:
    first, second = rules(12, "troca"), rules(12, "entrega")
    doc = markdown(f"# Trocas\n\n{' '.join(first)}\n\n# Entregas\n\n{' '.join(second)}")
    chunks = chunk(doc, max_tokens=120, overlap_tokens=30)
    check_invariants(chunks, 120)
    sections = [c.heading_path for c in chunks]
    assert sections == sorted(sections, key=lambda p: p != ["Trocas"])  # one run each
    for c in chunks:
        other = "entrega" if c.heading_path == ["Trocas"] else "troca"
        assert f"de {other}" not in c.text
    boundary = sections.index(["Entregas"])
    assert shared_edge(body(chunks[boundary - 1]), body(chunks[boundary])) == ""


def test_small_sections_under_the_same_parent_are_not_merged() -> None:
    doc = markdown("# A\n\n## B\n\nUm.\n\n## C\n\nDois.")
    assert [c.text for c in chunk(doc)] == ["A > B\nUm.", "A > C\nDois."]


# --- sizes, sentences and overlap ------------------------------------------------------


def test_paragraphs_are_packed_greedily_and_kept_whole() -> None:
    paragraphs = [" ".join(rules(3, f"tema{i}")) for i in range(6)]  # ~60 tokens each
    doc = markdown("# Regras\n\n" + "\n\n".join(paragraphs))
    chunks = chunk(doc, max_tokens=200, overlap_tokens=30)
    check_invariants(chunks, 200)
    for paragraph in paragraphs:
        assert any(paragraph in c.text for c in chunks)
    fitting = max(
        k for k in range(1, 7) if count_tokens("Regras\n" + "\n".join(paragraphs[:k])) <= 200
    )
    assert 1 < fitting < 6
    assert chunks[0].text == "Regras\n" + "\n".join(paragraphs[:fitting])
    assert len(chunks) <= -(-6 // (fitting - 1)) + 1


def test_long_paragraph_splits_at_sentence_ends_with_overlap() -> None:
    sentences = rules(30)
    doc = markdown("# Política de trocas\n\n" + " ".join(sentences))
    chunks = chunk(doc, max_tokens=120, overlap_tokens=30)
    check_invariants(chunks, 120)
    assert len(chunks) > 5
    for c in chunks:
        pieces = split_sentences(body(c))
        assert all(p in sentences for p in pieces), "a chunk holds a partial sentence"
    for previous, following in itertools.pairwise(chunks):
        edge = shared_edge(body(previous), body(following))
        assert edge in sentences, "consecutive chunks share whole trailing sentences"
        assert 0 < count_tokens(edge) <= 30
    assert {s for c in chunks for s in split_sentences(body(c))} == set(sentences)


def test_overlap_can_be_turned_off() -> None:
    doc = markdown("# Regras\n\n" + " ".join(rules(30)))
    chunks = chunk(doc, max_tokens=120, overlap_tokens=0)
    check_invariants(chunks, 120)
    joined = " ".join(body(c) for c in chunks)
    assert joined == " ".join(rules(30))


def test_sentence_longer_than_a_chunk_splits_at_tokens() -> None:
    words = [f"palavra{i} ação" for i in range(400)]
    doc = markdown("# Texto corrido\n\n" + " ".join(words))
    chunks = chunk(doc, max_tokens=100, overlap_tokens=20)
    check_invariants(chunks, 100)
    assert len(chunks) > 5
    text = " ".join(body(c) for c in chunks)
    for word in words:
        assert word in text
    for previous, following in itertools.pairwise(chunks):
        edge = shared_edge(body(previous), body(following))
        assert edge and count_tokens(edge) <= 25


def test_multibyte_text_is_never_cut_inside_a_character() -> None:
    doc = doc_of(Block(kind="paragraph", text="🙏🏽ção" * 300))
    chunks = chunk(doc, max_tokens=50, overlap_tokens=10)
    check_invariants(chunks, 50)
    assert all(set(c.text) <= set("🙏🏽ção") for c in chunks)


def test_huge_heading_path_is_truncated_to_leave_room() -> None:
    heading = "Título muito longo " * 40
    doc = doc_of(Block(kind="paragraph", text=" ".join(rules(5)), heading_path=[heading]))
    chunks = chunk(doc, max_tokens=60, overlap_tokens=10)
    check_invariants(chunks, 60, full_path=False)
    assert all(c.text.startswith("Título muito longo") for c in chunks)
    assert all(count_tokens(c.text.split("\n")[0]) <= 30 for c in chunks)


# --- question-answer pairs -------------------------------------------------------------


def test_each_qa_pair_is_one_chunk() -> None:
    payload = [
        {"pergunta": "Qual o horário?", "resposta": "Das 8h às 18h.", "categoria": "Horários"},
        {"pergunta": "Aceita Pix?", "resposta": "Sim! ✅", "categoria": "Horários"},
        {"pergunta": "Tem estacionamento?", "resposta": "Sim, gratuito."},
    ]
    doc = extract(json.dumps(payload).encode(), filename="faq.json")
    chunks = chunk(doc)
    assert [c.text for c in chunks] == [
        "Horários\nQual o horário?\nDas 8h às 18h.",
        "Horários\nAceita Pix?\nSim! ✅",
        "Tem estacionamento?\nSim, gratuito.",
    ]
    check_invariants(chunks, 200)


def test_qa_pairs_are_not_merged_with_paragraphs() -> None:
    qa = Block(
        kind="qa", text="Entregam?\nSim.", question="Entregam?", answer="Sim.", heading_path=["F"]
    )
    before = Block(kind="paragraph", text="Antes.", heading_path=["F"])
    after = Block(kind="paragraph", text="Depois.", heading_path=["F"])
    assert [c.text for c in chunk(doc_of(before, qa, after))] == [
        "F\nAntes.",
        "F\nEntregam?\nSim.",
        "F\nDepois.",
    ]


def test_long_answer_continues_under_its_question() -> None:
    answer = " ".join(rules(20))
    question = "Como funciona a política de trocas?"
    qa = Block(kind="qa", text=f"{question}\n{answer}", question=question, answer=answer)
    chunks = chunk(doc_of(qa), max_tokens=100, overlap_tokens=30)
    check_invariants(chunks, 100)
    assert len(chunks) > 3
    assert all(c.text.startswith(question + "\n") for c in chunks)
    parts = {s for c in chunks for s in split_sentences(c.text.split("\n", 1)[1])}
    assert parts == set(rules(20))


# --- the embedding model's hard limit --------------------------------------------------


def word_pieces(text: str) -> int:
    """A stand-in for MiniLM's tokenizer: a piece per 3 characters of each word, plus marks."""
    return sum(-(-len(w) // 3) for w in re.findall(r"\w+", text)) + len(re.findall(r"\W", text))


def test_hard_limit_in_model_tokens_splits_further() -> None:
    doc = markdown("# Trocas\n\n" + " ".join(rules(40)) + "\n\n# FAQ\n\nTexto curto.")
    plain = chunk(doc, max_tokens=200, overlap_tokens=30)
    assert max(word_pieces(c.text) for c in plain) > 120
    capped = chunk(
        doc, max_tokens=200, overlap_tokens=30, hard_limit_tokens=120, model_tokens=word_pieces
    )
    check_invariants(capped, 200)
    assert all(word_pieces(c.text) <= 120 for c in capped)
    assert len(capped) > len(plain)
    assert capped[-1].text == "FAQ\nTexto curto."
    assert {s for c in capped for s in split_sentences(body(c))} >= set(rules(40))


def test_hard_limit_applies_to_qa_parts() -> None:
    answer = " ".join(rules(10))
    qa = Block(kind="qa", text=f"Pergunta?\n{answer}", question="Pergunta?", answer=answer)
    chunks = chunk(doc_of(qa), hard_limit_tokens=80, model_tokens=word_pieces)
    assert len(chunks) > 1
    assert all(word_pieces(c.text) <= 80 and c.text.startswith("Pergunta?\n") for c in chunks)


def test_hard_limit_without_model_tokens_caps_cl100k() -> None:
    doc = markdown("# Regras\n\n" + " ".join(rules(30)))
    chunks = chunk(doc, max_tokens=200, hard_limit_tokens=60)
    check_invariants(chunks, 60)


def test_hard_limit_below_what_chunking_can_reach_bisects() -> None:
    doc = markdown("# Horários > Feriados\n\n" + " ".join(rules(3)))
    chunks = chunk(doc, hard_limit_tokens=12, model_tokens=len)  # one "token" per character
    assert all(len(c.text) <= 12 for c in chunks)
    assert not any("Feriados" in c.text for c in chunks)  # no room left for the path
    assert {w for c in chunks for w in c.text.split()} == set(" ".join(rules(3)).split())
    assert [c.position for c in chunks] == list(range(len(chunks)))
    with pytest.raises(ValueError, match="hard_limit_tokens"):
        chunk(doc, hard_limit_tokens=3, model_tokens=lambda t: 5 * len(t))


# --- determinism, validation, sentences ------------------------------------------------


def test_output_is_deterministic() -> None:
    doc = markdown("# A\n\n" + " ".join(rules(25)) + "\n\n## B\n\n- um\n- dois\n\n# C\n\nfim")
    first = chunk(doc, max_tokens=90, overlap_tokens=25)
    assert first == chunk(doc, max_tokens=90, overlap_tokens=25)
    check_invariants(first, 90)


def test_empty_document_has_no_chunks() -> None:
    assert chunk(doc_of()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 10},
        {"overlap_tokens": -1},
        {"max_tokens": 50, "overlap_tokens": 50},
        {"hard_limit_tokens": 0},
    ],
)
def test_invalid_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        chunk(doc_of(Block(kind="paragraph", text="x")), **kwargs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Fale com a Dra. Ana ou com o Sr. João. Eles atendem às 8h.",
            ["Fale com a Dra. Ana ou com o Sr. João.", "Eles atendem às 8h."],
        ),
        (
            "Traga um documento, p.ex. RG ou CNH. A Loja Açaí S.A. agradece!",
            ["Traga um documento, p.ex. RG ou CNH.", "A Loja Açaí S.A. agradece!"],
        ),
        (
            "Vocês abrem? sim, abrimos! Veja a pág. 3 e o art. 5. Obrigado…",
            ["Vocês abrem?", "sim, abrimos!", "Veja a pág. 3 e o art. 5.", "Obrigado…"],
        ),
        (
            "Esperamos... e nada. Ele disse: “Volte amanhã.” Depois (às 9h) voltei.",
            ["Esperamos... e nada.", "Ele disse: “Volte amanhã.”", "Depois (às 9h) voltei."],
        ),
        (
            "Valor: R$ 10.50 por kg. J. Silva assina.\nNova linha sem ponto",
            ["Valor: R$ 10.50 por kg.", "J. Silva assina.", "Nova linha sem ponto"],
        ),
        ("Sem pontuação nenhuma aqui", ["Sem pontuação nenhuma aqui"]),
    ],
)
def test_split_sentences_portuguese(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
