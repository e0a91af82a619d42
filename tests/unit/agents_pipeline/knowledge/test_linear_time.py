"""Extraction and chunking take time linear in the input, on inputs built to make them slow.

A complexity check, not a performance target: each input is measured at a size n and at
4n, and the larger must cost less than 12 times the smaller (plus a little, for timer
noise): a linear reader costs about 4 times, a quadratic one 16. The sizes are the
megabyte that froze a worker: before the readers were rewritten, most of these inputs
took minutes at n already (a Markdown heading with 20,000 inner spaces took 4 s).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from copy import deepcopy

import docx
import pytest
from docx.document import Document
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents_pipeline.knowledge import ExtractionError, chunk, extract
from tests.unit.agents_pipeline.knowledge.samples import make_pdf

MB = 1 << 20
RATIO = 12.0
SLACK = 0.05  # seconds: timer and cache noise on small costs


def _cost(run: Callable[[], object], repeat: int) -> float:
    """The least CPU time of ``run`` over ``repeat`` calls (this thread only, so other
    processes on the machine barely matter)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        try:
            run()
        except ExtractionError:
            pass  # a fast, clear refusal is linear too; the time still counts
        best = min(best, time.thread_time() - started)
    return best


def assert_linear(make: Callable[[int], Callable[[], object]], n: int) -> None:
    """Cost at n and 4n within the ratio bound; ``make(size)`` prepares the input and
    returns what to time. A pair over the bound is measured once more before it fails (a
    burst of load on a shared machine; a quadratic cost fails both times)."""
    small, large = make(n), make(4 * n)
    _cost(small, 1)  # imports, caches
    for _attempt in range(2):
        t_small, t_large = _cost(small, 2), _cost(large, 1)
        if t_large < RATIO * t_small + SLACK:
            return
    ratio = t_large / max(t_small, 1e-9)
    raise AssertionError(f"n={n}: {t_small:.4f}s, 4n: {t_large:.4f}s (ratio {ratio:.1f})")


Timed = Callable[[], object]


def extraction(filename: str, build: Callable[[int], bytes]) -> Callable[[int], Timed]:
    """``assert_linear``'s ``make`` for extracting a built document."""

    def make(size: int) -> Callable[[], object]:
        data = build(size)
        return lambda: extract(data, filename=filename)

    return make


def _docx(fill: Callable[[Document, int], None]) -> Callable[[int], bytes]:
    def build(size: int) -> bytes:
        document = docx.Document()
        fill(document, size)
        buffer = io.BytesIO()
        document.save(buffer)
        return buffer.getvalue()

    return build


def _merged_column(document: Document, size: int) -> None:
    """A two-column table whose first column is one cell merged down every row."""
    rows = max(2, size // 2000)
    table = document.add_table(rows=rows, cols=2)
    for index, row in enumerate(table.rows):
        row.cells[1].text = f"linha {index}"
        tc_pr = row.cells[0]._tc.get_or_add_tcPr()
        merge = OxmlElement("w:vMerge")
        if index == 0:
            merge.set(qn("w:val"), "restart")
            row.cells[0].text = "Grupo"
        tc_pr.append(merge)


def _many_styles(document: Document, size: int) -> None:
    """As many paragraph styles as paragraphs, each paragraph in its own (written as XML:
    python-docx's add_style is itself quadratic in the styles)."""
    count = max(2, size // 400)
    template = document.styles.add_style("Estilo", WD_STYLE_TYPE.PARAGRAPH).element
    first = document.add_paragraph("Parágrafo.")._p
    for index in range(count):
        style = deepcopy(template)
        style.set(qn("w:styleId"), f"Estilo{index}")
        style.name_val = f"Estilo {index}"
        document.styles.element.append(style)
        paragraph = deepcopy(first) if index else first
        paragraph.style = f"Estilo{index}"
        if index:
            first.getparent()[-1].addprevious(paragraph)  # before the section properties


ADVERSARIAL: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "md heading with inner spaces": ("a.md", lambda n: b"# a" + b" " * n + b"b #\n"),
    "md heading of hashes": ("a.md", lambda n: b"# a " + b"# " * (n // 2) + b"x\n"),
    "md run of *": ("a.md", lambda n: b"texto " + b"*" * n + b"a\n"),
    "md *word": ("a.md", lambda n: b"*a " * (n // 3) + b"\n"),
    "md **word": ("a.md", lambda n: b"**a " * (n // 4) + b"\n"),
    "md _word": ("a.md", lambda n: b"_a " * (n // 3) + b"\n"),
    "md ~~word": ("a.md", lambda n: b"~~a " * (n // 4) + b"\n"),
    "md run of [": ("a.md", lambda n: b"texto " + b"[" * n + b"\n"),
    "md [a](": ("a.md", lambda n: b"[a](" * (n // 4) + b"\n"),
    "md ![": ("a.md", lambda n: b"![" * (n // 2) + b"]x\n"),
    "md run of backticks": ("a.md", lambda n: b"a " + b"`" * n + b"a\n"),
    "md <tag": ("a.md", lambda n: b"<a " * (n // 3) + b"\n"),
    "md <http://": ("a.md", lambda n: b"<http://" * (n // 8) + b"\n"),
    "md unclosed comments": ("a.md", lambda n: b"x <!--" * (n // 6) + b"\n"),
    "md table delimiter": ("a.md", lambda n: b"a|b\n|-" + b" " * n + b"x\n"),
    "txt run of dots": ("a.txt", lambda n: b"a" + b"." * n),
    "txt one word": ("a.txt", lambda n: b"a" * n),
    "html run of <a": ("a.html", lambda n: b"<a" * (n // 2)),
    "html run of <": ("a.html", lambda n: b"<p>" + b"<" * n),
    "html attributes with >": ("a.html", lambda n: b"<a x='>' " * (n // 9) + b'z="'),
    "html nested divs": ("a.html", lambda n: b"<div>" * (n // 5) + b"x"),
    "html one long tag": ("a.html", lambda n: b"<p " + b"a=b " * (n // 4) + b">t</p>"),
    "html comment of dashes": ("a.html", lambda n: b"<!--" + b"-" * (n // 2) + b" " * (n // 2)),
    "html unclosed comments": ("a.html", lambda n: b"<p>x</p>" + b"<!-- >" * (n // 6)),
    "html &#": ("a.html", lambda n: b"<p>" + b"&#" * (n // 2) + b"</p>"),
    "csv 1 MB field": ("a.csv", lambda n: b"pergunta,resposta\nq," + b"a " * (n // 2) + b"\n"),
    "json deeply nested": ("a.json", lambda n: b"[" * (n // 2) + b"]" * (n // 2)),
    "json long answer": ("a.json", lambda n: b'[{"q":"a","a":"' + b"b " * (n // 2) + b'"}]'),
    "pdf long line": ("a.pdf", lambda n: make_pdf([["palavra " * (n // 8)]])),
    # pypdf costs ~1 ms a page: a quarter of the size keeps the test short.
    "pdf many pages": ("a.pdf", lambda n: make_pdf([["texto da página"]] * (n // 1600))),
    "docx long paragraph": ("a.docx", _docx(lambda d, n: d.add_paragraph("palavra " * (n // 8)))),
    "docx merged column": ("a.docx", _docx(_merged_column)),
    "docx many styles": ("a.docx", _docx(_many_styles)),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_extraction_is_linear(name: str) -> None:
    filename, build = ADVERSARIAL[name]
    assert_linear(extraction(filename, build), MB // 4)


# Markup characters that the patterns replaced here were slow on, alone or in short groups.
_MARKUP = st.text(alphabet="*_[]()<>!`~#-|.:= \t\n&;\"'/\\a", min_size=1, max_size=4)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(unit=_MARKUP, filename=st.sampled_from(["a.md", "a.html", "a.txt"]))
def test_any_repeated_markup_extracts_in_linear_time(unit: str, filename: str) -> None:
    def build(size: int) -> bytes:
        return ("x " + unit * (size // len(unit)) + " y\n").encode()

    assert_linear(extraction(filename, build), MB // 4)


# Chunking costs far more per byte than extraction (it counts tokens), so it is measured
# on the extracted documents at a smaller size.
CHUNKED = [
    "md heading with inner spaces",
    "md heading of hashes",
    "md run of [",
    "txt run of dots",
    "txt one word",
    "csv 1 MB field",
    "html run of <a",
]


def _initials(n: int) -> bytes:
    return b"a. " * (n // 3)  # periods that never end a sentence


@pytest.mark.parametrize("name", [*CHUNKED, "txt initials"])
def test_chunking_is_linear(name: str) -> None:
    filename, build = ("a.txt", _initials) if name == "txt initials" else ADVERSARIAL[name]

    def make(size: int) -> Callable[[], object]:
        doc = extract(build(size), filename=filename)
        return lambda: chunk(doc, max_tokens=200, overlap_tokens=30, hard_limit_tokens=230)

    assert_linear(make, 32 * 1024)


def test_a_long_heading_is_text_not_a_path_on_every_chunk() -> None:
    heading = "Título " * 1000
    doc = extract(f"# {heading}\n\n## Seção\n\nTexto da seção.".encode(), filename="a.md")
    assert [b.kind for b in doc.blocks] == ["paragraph", "heading", "paragraph"]
    assert doc.blocks[2].heading_path == ["Seção"]


def test_a_field_over_the_csv_default_limit_is_read() -> None:
    answer = "resposta " * 20_000  # 180 KB: the csv module's default limit is 128 KiB
    data = f"pergunta,resposta\nQual?,{answer}\n".encode()
    doc = extract(data, filename="faq.csv")
    assert doc.blocks[0].answer == answer.strip()


def test_deep_json_is_a_clear_error() -> None:
    with pytest.raises(ExtractionError) as caught:
        extract(b"[" * 100_000 + b"]" * 100_000, filename="a.json")
    assert caught.value.code == "corrupt"  # json's own recursion limit: a bounded refusal
