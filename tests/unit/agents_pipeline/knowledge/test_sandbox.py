"""Extraction in child processes: the same documents, and limits that end a pathological one."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import zipfile

import pytest

from agents_pipeline.knowledge import ExtractionError, extract
from agents_pipeline.knowledge.sandbox import ExtractionLimits, ExtractionPool
from tests.unit.agents_pipeline.knowledge.samples import make_docx, make_pdf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))


def slow_pdf(lines: int = 120_000) -> bytes:
    """One page of many text lines: pypdf's extraction costs the square of them (~16 s of
    CPU for 120,000 here), the kind of document the CPU limit is for."""
    return make_pdf([[f"linha {i}" for i in range(lines)]])


def huge_docx(megabytes: int = 200) -> bytes:
    """A .docx of ~1 MB whose document.xml expands to ``megabytes`` (under the zip check's
    256 MB): parsing it needs far more memory than a small limit."""
    source = zipfile.ZipFile(io.BytesIO(make_docx()))
    paragraph = b"<w:p><w:r><w:t>" + b"texto " * 100 + b"</w:t></w:r></w:p>"
    body = paragraph * (megabytes * 1024 * 1024 // len(paragraph))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "word/document.xml":
                data = data.replace(b"<w:body>", b"<w:body>" + body, 1)
            target.writestr(item, data)
    return out.getvalue()


SAMPLES = [
    ("horarios.txt", "Abrimos às 6h.\n\nFechamos às 20h.".encode()),
    ("bolos.md", "# Bolos\n\n## Encomendas\n\n*48 horas* de [antecedência](#a).".encode()),
    ("p.html", "<h1>Estacionamento</h1><p>Grátis &amp; coberto.</p>".encode()),
    ("cafe.pdf", make_pdf([["Cafe especial", "O espresso custa 9 reais."]])),
    ("trocas.docx", make_docx()),
    ("faq.csv", b"pergunta,resposta\nEntregam?,Sim.\n"),
    ("faq.json", b'[{"question": "Q?", "answer": "A."}]'),
    ("muitos.txt", "\n\n".join(f"Parágrafo {n}." for n in range(5000)).encode()),  # frames
]


async def test_children_extract_what_extract_does() -> None:
    pool = ExtractionPool(ExtractionLimits(processes=2))
    try:
        results = await asyncio.gather(
            *(pool.extract(data, filename=name, mime_type=None) for name, data in SAMPLES)
        )
        for (name, data), doc in zip(SAMPLES, results, strict=True):
            assert doc == extract(data, filename=name), name
    finally:
        await pool.close()


async def test_extraction_errors_come_back_as_they_are() -> None:
    pool = ExtractionPool(ExtractionLimits(processes=1))
    try:
        with pytest.raises(ExtractionError) as caught:
            await pool.extract(b"%PDF-1.4 garbage", filename="a.pdf", mime_type=None)
        assert caught.value.code == "corrupt" and not caught.value.retriable
        with pytest.raises(ExtractionError) as caught:
            await pool.extract(b"MZ\x90", filename="a.exe", mime_type=None)
        assert caught.value.code == "unsupported_type"
    finally:
        await pool.close()


async def test_cpu_limit_ends_the_document_and_the_pool_goes_on() -> None:
    pool = ExtractionPool(ExtractionLimits(cpu_seconds=1, timeout_seconds=60, processes=1))
    try:
        with pytest.raises(ExtractionError) as caught:
            await pool.extract(slow_pdf(), filename="lento.pdf", mime_type=None)
        assert caught.value.code == "extraction_limit"
        assert "over 1 s of CPU time" in caught.value.message
        doc = await pool.extract(b"Depois.", filename="a.txt", mime_type=None)
        assert doc.blocks[0].text == "Depois."
    finally:
        await pool.close()


async def test_memory_limit_ends_the_document() -> None:
    pool = ExtractionPool(ExtractionLimits(memory_mb=300, processes=1))
    try:
        with pytest.raises(ExtractionError) as caught:
            await pool.extract(huge_docx(), filename="enorme.docx", mime_type=None)
        assert caught.value.code == "extraction_limit"
        assert "300 MB" in caught.value.message or "killed" in caught.value.message
        doc = await pool.extract(b"Depois.", filename="a.txt", mime_type=None)
        assert doc.blocks[0].text == "Depois."
    finally:
        await pool.close()


async def test_wall_clock_limit_kills_a_child_that_takes_too_long() -> None:
    pool = ExtractionPool(ExtractionLimits(cpu_seconds=600, timeout_seconds=1.0, processes=1))
    try:
        await pool.warm_up()  # the child's start is not the document's time
        with pytest.raises(ExtractionError) as caught:
            await pool.extract(slow_pdf(), filename="lento.pdf", mime_type=None)
        assert caught.value.code == "extraction_limit"
        assert caught.value.message == "took over 1 s"
        doc = await pool.extract(b"Depois.", filename="a.txt", mime_type=None)
        assert doc.blocks[0].text == "Depois."
    finally:
        await pool.close()


async def test_a_slow_document_holds_one_child_only() -> None:
    pool = ExtractionPool(ExtractionLimits(cpu_seconds=600, timeout_seconds=60, processes=2))
    try:
        await pool.warm_up()
        slow = asyncio.ensure_future(pool.extract(slow_pdf(), filename="l.pdf", mime_type=None))
        for n in range(5):  # served by the other child while the first is busy
            doc = await pool.extract(f"Texto {n}.".encode(), filename="a.txt", mime_type=None)
            assert doc.blocks[0].text == f"Texto {n}."
        assert not slow.done()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
    finally:
        await pool.close()


def test_the_child_imports_no_model_or_llm_client() -> None:
    code = (
        "import sys, agents_pipeline.knowledge.sandbox;"
        " print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'torch', 'numpy', 'openai', 'tiktoken', 'tokenizers', 'transformers', 'faust'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert out.stdout.strip() == "[]"
