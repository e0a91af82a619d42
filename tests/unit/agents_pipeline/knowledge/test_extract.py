"""Extraction of every upload format, with Portuguese text, and its typed errors."""

from __future__ import annotations

import csv
import importlib
import io
import json
import random
import unicodedata
import zipfile

import docx
import pytest
from docx.oxml import OxmlElement
from docx.oxml.ns import qn

from agents_pipeline.errors import PipelineError
from agents_pipeline.knowledge import (
    Block,
    ExtractedDocument,
    ExtractionError,
    detect_format,
    extract,
)
from tests.unit.agents_pipeline.knowledge.samples import (
    PDF_EMOJI,
    encrypt_pdf,
    has_tbl_header,
    make_docx,
    make_pdf,
)

PT = "Atendemos de segunda a sábado. Promoção de verão: calçados com 20% de desconto! 👟"


def kinds(doc: ExtractedDocument) -> list[tuple[str, str]]:
    """(kind, text) of each block, for compact assertions."""
    return [(b.kind, b.text) for b in doc.blocks]


def error_code(data: bytes, filename: str | None = None, **kwargs: object) -> str:
    """The code of the ExtractionError that extracting ``data`` must raise."""
    with pytest.raises(ExtractionError) as caught:
        extract(data, filename=filename, **kwargs)  # type: ignore[arg-type]
    return caught.value.code


# --- format detection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "mime", "expected"),
    [
        ("Manual.PDF", None, "pdf"),
        ("notas.md", "text/plain", "md"),  # the extension wins over the browser's guess
        ("C:\\Users\\ana\\FAQ.Csv", None, "csv"),
        ("faq", "application/json; charset=utf-8", "json"),
        (None, "text/html", "html"),
        ("relatorio.docx", None, "docx"),
        ("leia-me.txt", None, "txt"),
        ("pagina.htm", None, "html"),
        ("arquivo.bin", "text/markdown", "md"),  # unknown extension: the MIME type decides
    ],
)
def test_detect_format(filename: str | None, mime: str | None, expected: str) -> None:
    assert detect_format(filename, mime) == expected


@pytest.mark.parametrize(
    ("filename", "mime"),
    [("foto.jpg", "image/jpeg"), ("planilha.xlsx", None), (None, None), ("sem_extensao", None)],
)
def test_unknown_type_is_unsupported(filename: str | None, mime: str | None) -> None:
    assert error_code(b"data", filename, mime_type=mime) == "unsupported_type"


# --- plain text ------------------------------------------------------------------------


def test_txt_paragraphs_split_on_blank_lines() -> None:
    data = f"{PT}\nSegunda linha do parágrafo.\n\n  \nAção, coração e pão. 🙏🏽\n".encode()
    doc = extract(data, filename="horarios-loja.txt", mime_type="text/plain")
    assert doc.format == "txt"
    assert doc.title == "horarios-loja"
    assert kinds(doc) == [
        ("paragraph", f"{PT}\nSegunda linha do parágrafo."),
        ("paragraph", "Ação, coração e pão. 🙏🏽"),
    ]
    assert all(b.heading_path == [] for b in doc.blocks)


def test_txt_cp1252_from_windows_is_decoded() -> None:
    text = "Informações: preço “promocional” de €10 — válido até março.\r\n\r\nObrigação"
    data = text.encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    doc = extract(data, filename="avisos.txt")
    assert kinds(doc) == [
        ("paragraph", "Informações: preço “promocional” de €10 — válido até março."),
        ("paragraph", "Obrigação"),
    ]


def test_txt_utf8_bom_utf16_and_latin1_fallback() -> None:
    text = "Olá, ação! 😀"
    for data in (text.encode("utf-8-sig"), text.encode("utf-16"), text.encode("utf-16-le")):
        assert kinds(extract(data, filename="a.txt")) == [("paragraph", text)]
    # 0x81 is undefined in cp1252: latin-1 still reads the rest.
    doc = extract(b"Cora\xe7\xe3o \x81fim", filename="a.txt")
    assert doc.blocks[0].text == "Coração fim"


def test_text_is_nfc_without_invisible_characters() -> None:
    decomposed = unicodedata.normalize("NFD", "ação e coração")
    data = f"{decomposed}\u200b\u00ad \x07fim\ufeff".encode()
    doc = extract(data, filename="a.txt")
    assert doc.blocks[0].text == "ação e coração fim"
    assert unicodedata.is_normalized("NFC", doc.blocks[0].text)


def test_binary_data_in_a_text_file_is_corrupt() -> None:
    assert error_code(b"PK\x03\x04\x00\x00binary\x00\x00data", "a.txt") == "corrupt"


# --- markdown --------------------------------------------------------------------------

MARKDOWN = """---
titulo: ignorado
---
# Central de Ajuda 🛟

Bem-vindo à **Loja Açaí**! Veja o [site](https://loja.com.br/trocas) e o `código`.
Texto _em itálico_ e nome_de_arquivo.txt.

Horários
--------

- Segunda a sexta: **8h às 18h**
- Sábado: 9h às 13h
  (exceto feriados)
1. Primeiro passo

| Dia | Horário |
|:----|--------:|
| Domingo | Fechado |

### Código de exemplo

```python
# isto não é um título
print("olá")
```

> Citação importante.

***

Rodapé
======
Fim.
"""


def test_markdown_structure() -> None:
    doc = extract(MARKDOWN.encode(), filename="ajuda.md")
    assert doc.format == "md"
    assert doc.title == "Central de Ajuda 🛟"
    top, horarios = ["Central de Ajuda 🛟"], ["Central de Ajuda 🛟", "Horários"]
    expected = [
        Block(kind="heading", text="Central de Ajuda 🛟", level=1),
        Block(
            kind="paragraph",
            text="Bem-vindo à Loja Açaí! Veja o site (https://loja.com.br/trocas) e o código. "
            "Texto em itálico e nome_de_arquivo.txt.",
            heading_path=top,
        ),
        Block(kind="heading", text="Horários", level=2, heading_path=top),
        Block(kind="list_item", text="Segunda a sexta: 8h às 18h", heading_path=horarios),
        Block(kind="list_item", text="Sábado: 9h às 13h (exceto feriados)", heading_path=horarios),
        Block(kind="list_item", text="Primeiro passo", heading_path=horarios),
        Block(kind="table_row", text="Dia: Domingo | Horário: Fechado", heading_path=horarios),
        Block(kind="heading", text="Código de exemplo", level=3, heading_path=horarios),
        Block(
            kind="paragraph",
            text='# isto não é um título\nprint("olá")',
            heading_path=[*horarios, "Código de exemplo"],
        ),
        Block(
            kind="paragraph",
            text="Citação importante.",
            heading_path=[*horarios, "Código de exemplo"],
        ),
        Block(kind="heading", text="Rodapé", level=1),
        Block(kind="paragraph", text="Fim.", heading_path=["Rodapé"]),
    ]
    assert doc.blocks == expected


def test_markdown_atx_closing_hashes_and_unclosed_fence() -> None:
    data = "## Trocas ##\n\n```\ncódigo sem fim\n".encode()
    doc = extract(data, filename="x.markdown")
    assert kinds(doc) == [("heading", "Trocas"), ("paragraph", "código sem fim")]
    assert doc.blocks[0].level == 2


# --- html ------------------------------------------------------------------------------

HTML = """<!DOCTYPE html>
<html lang="pt-BR"><head><meta charset="utf-8"><title>Loja Açaí</title>
<style>p { color: red }</style>
<script>document.write("<p>não deve aparecer</p>");</script></head>
<body>
<nav><ul><li><a href="/">Início</a></li><li>Menu secreto</li></ul></nav>
<h1>Perguntas &amp; respostas</h1>
<p>Entregamos em <b>todo</b> o Brasil&nbsp;&#x1F69A; &mdash; frete
   grátis acima de R$&nbsp;200.<br>Prazo: 5 dias.</p>
<h2>Pagamento</h2>
<ul><li>Pix<li>Cartão de crédito<ul><li>Visa</li></ul></li></ul>
<table>
  <tr><th>Plano</th><th>Preço</th></tr>
  <tr><td>Básico</td><td><p>R$ 10</p></td></tr>
</table>
<pre>  linha 1
    linha 2</pre>
<noscript>Ative o JavaScript</noscript>
<footer>Rua Augusta, 100 &ndash; São Paulo</footer>
</body></html>"""


def test_html_structure_without_script_style_nav() -> None:
    doc = extract(HTML.encode(), filename=None, mime_type="text/html")
    assert doc.format == "html"
    assert doc.title == "Perguntas & respostas"
    assert kinds(doc) == [
        ("heading", "Perguntas & respostas"),
        (
            "paragraph",
            "Entregamos em todo o Brasil 🚚 — frete grátis acima de R$ 200.\nPrazo: 5 dias.",
        ),
        ("heading", "Pagamento"),
        ("list_item", "Pix"),
        ("list_item", "Cartão de crédito"),
        ("list_item", "Visa"),
        ("table_row", "Plano: Básico | Preço: R$ 10"),
        ("paragraph", "  linha 1\n    linha 2"),
        ("paragraph", "Rua Augusta, 100 \u2013 São Paulo"),
    ]
    assert doc.blocks[3].heading_path == ["Perguntas & respostas", "Pagamento"]
    text = " ".join(b.text for b in doc.blocks)
    for hidden in ("não deve aparecer", "color", "Menu secreto", "Início", "JavaScript"):
        assert hidden not in text


def test_html_source_newlines_are_spaces_but_br_breaks_a_line() -> None:
    html = "<p><b>Pão</b>\n<i>de queijo</i><br/>R$ 5</p>"
    assert kinds(extract(html.encode(), filename="a.html")) == [
        ("paragraph", "Pão de queijo\nR$ 5")
    ]


def test_html_title_tag_is_the_fallback_title_and_rows_without_header() -> None:
    html = "<title>Preços</title><table><tr><td>Corte</td><td>R$ 50</td></tr></table>"
    doc = extract(html.encode("cp1252"), filename="precos.html")
    assert doc.title == "Preços"
    assert kinds(doc) == [("table_row", "Corte | R$ 50")]


def test_html_with_only_scripts_has_no_text() -> None:
    html = b"<html><script>alert(1)</script><style>a{}</style><nav>menu</nav></html>"
    assert error_code(html, "vazio.html") == "no_text"


# --- pdf -------------------------------------------------------------------------------

PDF_PAGES = [
    [
        "Manual do Cliente",
        "",
        "Atendemos de segunda a sábado, das 8h às 18h, inclusive em",
        f"feriados municipais. Ação especial de verão {PDF_EMOJI}.",
        "Devoluções exigem a nota fiscal e a embalagem original do produ-",
        "to, sem sinais de uso, em até trinta dias corridos.",
    ],
    ["• Troca grátis na primeira compra feita pelo aplicativo da loja.", "Página dois."],
]


def test_pdf_pages_to_paragraphs_with_accents_and_emoji() -> None:
    doc = extract(make_pdf(PDF_PAGES), filename="manual-cliente.pdf", mime_type=None)
    assert doc.format == "pdf"
    assert doc.title == "manual-cliente"
    assert kinds(doc) == [
        ("paragraph", "Manual do Cliente"),
        (
            "paragraph",
            "Atendemos de segunda a sábado, das 8h às 18h, inclusive em feriados municipais. "
            "Ação especial de verão 😀.",
        ),
        (
            "paragraph",
            "Devoluções exigem a nota fiscal e a embalagem original do produto, sem sinais "
            "de uso, em até trinta dias corridos.",
        ),
        ("list_item", "Troca grátis na primeira compra feita pelo aplicativo da loja."),
        ("paragraph", "Página dois."),
    ]


def test_pdf_without_text_layer_is_no_text() -> None:
    assert error_code(make_pdf([[], []]), "digitalizado.pdf") == "no_text"


def test_pdf_encrypted_with_a_password_is_refused() -> None:
    locked = encrypt_pdf(make_pdf(PDF_PAGES), user_password="segredo")
    assert error_code(locked, "contrato.pdf") == "encrypted"


def test_pdf_with_only_an_owner_password_opens() -> None:
    protected = encrypt_pdf(make_pdf(PDF_PAGES), user_password="")
    doc = extract(protected, filename="manual.pdf")
    assert doc.blocks[1].text.startswith("Atendemos de segunda a sábado")


def test_pdf_damaged() -> None:
    pdf = make_pdf(PDF_PAGES)
    assert error_code(b"not a pdf at all", "a.pdf") == "corrupt"
    assert error_code(pdf[:200], "a.pdf") == "corrupt"


# --- docx ------------------------------------------------------------------------------


def test_docx_headings_lists_and_tables() -> None:
    data = make_docx()
    assert has_tbl_header(data)
    doc = extract(data, filename="trocas.docx")
    assert doc.format == "docx"
    assert doc.title == "Política de Trocas"
    top = ["Política de Trocas"]
    assert doc.blocks == [
        Block(kind="heading", text="Política de Trocas", level=1),
        Block(
            kind="paragraph",
            text="Você pode trocar o produto em até 30 dias, sem custo. 👟",
            heading_path=top,
        ),
        Block(kind="heading", text="Condições", level=2, heading_path=top),
        Block(
            kind="list_item",
            text="Produto sem uso, na embalagem original.",
            heading_path=[*top, "Condições"],
        ),
        Block(
            kind="list_item",
            text="Nota fiscal ou comprovante de compra.",
            heading_path=[*top, "Condições"],
        ),
        Block(kind="heading", text="Prazos por região", level=2, heading_path=top),
        Block(
            kind="table_row",
            text="Região: São Paulo | Prazo: 2 dias úteis",
            heading_path=[*top, "Prazos por região"],
        ),
        Block(
            kind="table_row",
            text="Região: Nordeste | Prazo: 5 dias",
            heading_path=[*top, "Prazos por região"],
        ),
        Block(
            kind="paragraph",
            text="Dúvidas? Fale conosco pelo WhatsApp.",
            heading_path=[*top, "Prazos por região"],
        ),
    ]


def test_docx_title_style_outline_level_and_hyperlinks() -> None:
    document = docx.Document()
    document.add_heading("Guia da Loja", level=0)  # the "Title" style
    outlined = document.add_paragraph("Capítulo marcado por nível de tópico")
    level = OxmlElement("w:outlineLvl")
    level.set(qn("w:val"), "1")
    outlined._p.get_or_add_pPr().append(level)
    paragraph = document.add_paragraph("Veja ")
    link, run, text = OxmlElement("w:hyperlink"), OxmlElement("w:r"), OxmlElement("w:t")
    text.text = "nosso site"
    run.append(text)
    link.append(run)
    paragraph._p.append(link)
    paragraph.add_run(" agora.").add_break()
    paragraph.add_run("Segunda linha ✨")
    buffer = io.BytesIO()
    document.save(buffer)
    doc = extract(buffer.getvalue(), filename="guia.docx")
    assert [(b.kind, b.level, b.text, b.heading_path) for b in doc.blocks] == [
        ("heading", 1, "Guia da Loja", []),
        ("heading", 2, "Capítulo marcado por nível de tópico", ["Guia da Loja"]),
        (
            "paragraph",
            None,
            "Veja nosso site agora.\nSegunda linha ✨",
            ["Guia da Loja", "Capítulo marcado por nível de tópico"],
        ),
    ]


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_docx_damaged_or_not_word() -> None:
    data = make_docx()
    assert error_code(data[: len(data) // 2], "a.docx") == "corrupt"
    assert error_code(b"PK\x03\x04 truncated", "a.docx") == "corrupt"
    assert error_code(_zip({"xl/workbook.xml": b"<x/>"}), "a.docx") == "corrupt"
    broken = _zip({"[Content_Types].xml": b"<Types", "word/document.xml": b"<w:document"})
    assert error_code(broken, "a.docx") == "corrupt"


def test_docx_password_protected_and_legacy_doc() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64
    assert error_code(ole + "EncryptedPackage".encode("utf-16-le"), "a.docx") == "encrypted"
    assert error_code(ole + b"WordDocument", "a.docx") == "corrupt"


def test_docx_zip_bomb_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    # The package re-exports the function extract(), which shadows the module's name.
    module = importlib.import_module("agents_pipeline.knowledge.extract")
    monkeypatch.setattr(module, "MAX_UNZIPPED_BYTES", 1000)
    bomb = _zip({"word/document.xml": b" " * 5000})
    assert error_code(bomb, "a.docx") == "too_large"


# --- csv and json question-answer files ------------------------------------------------


def test_csv_semicolon_with_bom_category_and_multiline_answer() -> None:
    data = (
        "Pergunta;RESPOSTA;Categoria\n"
        "Qual o horário?;Das 8h às 18h. ⏰;Horários\n"
        '"Aceita Pix; boleto?";"Sim,\nà vista";Pagamento\n'
        ";sem pergunta;\n"
        "\n"
    ).encode("utf-8-sig")
    doc = extract(data, filename="faq.csv")
    assert doc.format == "csv"
    assert doc.title == "faq"
    assert doc.blocks == [
        Block(
            kind="qa",
            text="Qual o horário?\nDas 8h às 18h. ⏰",
            question="Qual o horário?",
            answer="Das 8h às 18h. ⏰",
            heading_path=["Horários"],
        ),
        Block(
            kind="qa",
            text="Aceita Pix; boleto?\nSim,\nà vista",
            question="Aceita Pix; boleto?",
            answer="Sim,\nà vista",
            heading_path=["Pagamento"],
        ),
    ]


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        (["question", "answer"], ","),
        (["Q", "A"], "\t"),
        (["Questão", "Respostas"], ";"),
        (["id", "P", "extra", "R"], "|"),
    ],
)
def test_csv_recognised_headers(header: list[str], delimiter: str) -> None:
    values = {0: "Vocês entregam?", 1: "Sim, em São Paulo."}
    if len(header) == 4:
        values = {0: "7", 1: "Vocês entregam?", 2: "", 3: "Sim, em São Paulo."}
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(header)
    writer.writerow([values[i] for i in range(len(header))])
    doc = extract(buffer.getvalue().encode("cp1252"), filename="faq.csv")
    assert [(b.question, b.answer) for b in doc.blocks] == [
        ("Vocês entregam?", "Sim, em São Paulo.")
    ]


def test_csv_header_below_a_title_row() -> None:
    data = (
        "FAQ da Padaria, atualizado em março;;\n"
        "Pergunta;Resposta\n"
        "Tem pão sem glúten?;Sim, às terças.\n"
    )
    doc = extract(data.encode("cp1252"), filename="faq.csv")
    assert kinds(doc) == [("qa", "Tem pão sem glúten?\nSim, às terças.")]


def test_csv_without_question_answer_columns_is_bad_qa() -> None:
    assert error_code(b"nome,telefone\nAna,1199999\n", "contatos.csv") == "bad_qa"
    assert error_code("pergunta\nSó pergunta?\n".encode(), "faq.csv") == "bad_qa"


def test_csv_with_header_only_has_no_text() -> None:
    assert error_code(b"pergunta,resposta\n", "faq.csv") == "no_text"


@pytest.mark.parametrize(
    "payload",
    [
        [{"pergunta": "Tem estacionamento?", "resposta": "Sim, gratuito. 🚗"}],
        {"items": [{"Question": "Tem estacionamento?", "Answer": "Sim, gratuito. 🚗"}]},
        {"Tem estacionamento?": "Sim, gratuito. 🚗"},
    ],
)
def test_json_shapes(payload: object) -> None:
    doc = extract(json.dumps(payload, ensure_ascii=False).encode(), filename="faq.json")
    assert doc.format == "json"
    assert kinds(doc) == [("qa", "Tem estacionamento?\nSim, gratuito. 🚗")]
    assert doc.blocks[0].question == "Tem estacionamento?"
    assert doc.blocks[0].answer == "Sim, gratuito. 🚗"


def test_json_numbers_categories_and_skipped_items() -> None:
    payload = {
        "items": [
            {"q": "Quantos dias para troca?", "a": 30, "categoria": "Trocas"},
            {"q": "Sem resposta"},
            "não é objeto",
            {"q": "", "a": "sem pergunta"},
        ]
    }
    doc = extract(json.dumps(payload).encode(), filename="faq.json")
    assert doc.blocks == [
        Block(
            kind="qa",
            text="Quantos dias para troca?\n30",
            question="Quantos dias para troca?",
            answer="30",
            heading_path=["Trocas"],
        )
    ]


@pytest.mark.parametrize(
    "payload",
    [[{"nome": "Ana"}], {"a": 1, "b": [2]}, "texto", 42, [1, 2], {"items": [{"x": "y"}]}],
)
def test_json_without_question_answer_keys_is_bad_qa(payload: object) -> None:
    assert error_code(json.dumps(payload).encode(), "faq.json") == "bad_qa"


def test_json_invalid_is_corrupt() -> None:
    assert error_code(b'[{"pergunta": "sem fim"', "faq.json") == "corrupt"
    assert error_code(b"\xff\xfe\x00{", "faq.json") == "corrupt"
    assert error_code(b"[" * 100_000, "faq.json") == "corrupt"


# --- size and emptiness ----------------------------------------------------------------


@pytest.mark.parametrize("filename", ["a.txt", "a.pdf", "a.docx", "a.csv", "a.json", "a.html"])
def test_empty_files(filename: str) -> None:
    assert error_code(b"", filename) == "empty"
    assert error_code(b" \r\n\t ", filename) == "empty"


def test_whitespace_after_decoding_is_no_text() -> None:
    assert error_code("\ufeff \u00a0\n\u200b\n".encode(), "a.txt") == "no_text"
    assert error_code(b"<p>   </p><div>&nbsp;</div>", "a.html") == "no_text"
    assert error_code(b"[]", "a.json") == "no_text"


def test_too_large() -> None:
    assert error_code(b"x" * 101, "a.txt", max_bytes=100) == "too_large"
    assert extract(b"x" * 100, filename="a.txt", max_bytes=100).blocks[0].text == "x" * 100


def test_extraction_error_is_a_pipeline_error() -> None:
    with pytest.raises(PipelineError) as caught:
        extract(b"", filename="a.txt")
    assert isinstance(caught.value, ExtractionError)
    assert caught.value.code == "empty"
    assert caught.value.retriable is False
    assert caught.value.message


# --- fuzzing: bad bytes never raise anything but ExtractionError -------------------------

_SEEDS: dict[str, bytes] = {
    "a.pdf": make_pdf(PDF_PAGES),
    "b.pdf": encrypt_pdf(make_pdf(PDF_PAGES), user_password="x"),
    "a.docx": make_docx(),
    "a.json": json.dumps([{"pergunta": "Ação?", "resposta": "Sim ✅"}]).encode(),
    "a.csv": "pergunta;resposta\nAção?;Sim ✅\n".encode(),
    "a.html": HTML.encode(),
    "a.md": MARKDOWN.encode(),
    "a.txt": PT.encode(),
}


def _mutations(seed: bytes, rng: random.Random) -> list[bytes]:
    """Truncations, flipped bytes, inserted garbage and pure noise of a valid file."""
    out = [seed[: rng.randrange(1, len(seed))] for _ in range(8)]
    for _ in range(8):
        flipped = bytearray(seed)
        for _ in range(rng.randrange(1, 12)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        out.append(bytes(flipped))
    for _ in range(4):
        at = rng.randrange(len(seed))
        out.append(seed[:at] + rng.randbytes(rng.randrange(1, 64)) + seed[at:])
    out.extend(rng.randbytes(rng.randrange(1, 3000)) for _ in range(4))
    return out


@pytest.mark.parametrize("filename", sorted(_SEEDS))
def test_fuzzed_input_raises_only_extraction_error(filename: str) -> None:
    rng = random.Random(f"omnichat:{filename}")
    for data in _mutations(_SEEDS[filename], rng):
        try:
            doc = extract(data, filename=filename)
        except ExtractionError as exc:
            assert exc.code in {"corrupt", "encrypted", "no_text", "bad_qa", "empty"}
        else:
            assert doc.blocks
            assert all(b.text.strip() for b in doc.blocks)
