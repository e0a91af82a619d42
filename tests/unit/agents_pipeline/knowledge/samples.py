"""Small test documents built in code, so the tests need no binary fixtures in the repo."""

from __future__ import annotations

import io

import docx
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from pypdf import PdfReader, PdfWriter

# A code our hand-made PDF font maps to 😀 through its ToUnicode CMap: WinAnsi has no emoji.
PDF_EMOJI = "\x01"

_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CMapName /Omnichat-Test def
/CMapType 2 def
1 begincodespacerange
<00> <FF>
endcodespacerange
1 beginbfchar
<01> <D83DDE00>
endbfchar
endcmap
CMapName currentdict /CMap defineresource pop
end
end"""


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (cp1252) bytes, with its delimiters escaped."""
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _content_stream(lines: list[str]) -> bytes:
    """Text drawing operators: one line per entry, an empty entry leaves a blank line."""
    ops = [b"BT", b"/F1 12 Tf", b"16 TL", b"72 740 Td"]
    for line in lines:
        if line:
            ops.append(_pdf_string(line) + b" Tj")
        ops.append(b"T*")
    ops.append(b"ET")
    return b"\n".join(ops)


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF (Helvetica, WinAnsi, exact xref) with these text lines per page."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(data: bytes) -> bytes:
        return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    catalog = add(b"")  # filled in once the page tree exists
    page_tree = add(b"")
    to_unicode = add(stream(_TO_UNICODE))
    font = add(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding"
        b" /ToUnicode %d 0 R >>" % to_unicode
    )
    kids = []
    for lines in pages:
        content = add(stream(_content_stream(lines)))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792]"
                b" /Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (page_tree, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % page_tree
    refs = b" ".join(b"%d 0 R" % k for k in kids)
    objects[page_tree - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\n" % (len(objects) + 1, catalog)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def encrypt_pdf(pdf: bytes, *, user_password: str, owner_password: str = "dono") -> bytes:
    """The PDF encrypted with AES-128, as a user would protect it in a PDF tool."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def make_docx() -> bytes:
    """A Word document in Portuguese: headings (built-in and "Título 2"), a list, a table."""
    document = docx.Document()
    document.add_heading("Política de Trocas", level=1)
    document.add_paragraph("Você pode trocar o produto em até 30 dias, sem custo. 👟")
    document.add_heading("Condições", level=2)
    document.add_paragraph("Produto sem uso, na embalagem original.", style="List Bullet")
    document.add_paragraph("Nota fiscal ou comprovante de compra.", style="List Bullet")
    titulo = document.styles.add_style("Título 2", WD_STYLE_TYPE.PARAGRAPH)
    document.add_paragraph("Prazos por região", style=titulo)
    table = document.add_table(rows=3, cols=2)
    rows = [("Região", "Prazo"), ("São Paulo", "2 dias úteis"), ("Nordeste", "5 dias")]
    for row, (region, days) in zip(table.rows, rows, strict=True):
        row.cells[0].text, row.cells[1].text = region, days
    tr_pr = table.rows[0]._tr.get_or_add_trPr()
    tr_pr.append(OxmlElement("w:tblHeader"))
    document.add_paragraph("Dúvidas? Fale conosco pelo WhatsApp.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def has_tbl_header(data: bytes) -> bool:
    """Whether the first table row of a built document carries the header-row mark."""
    table = docx.Document(io.BytesIO(data)).tables[0]
    tr_pr = table.rows[0]._tr.trPr
    return tr_pr is not None and tr_pr.find(qn("w:tblHeader")) is not None
