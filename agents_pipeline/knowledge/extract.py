"""Knowledge-base uploads → titled, ordered text blocks, or one typed ``ExtractionError``.

Pure functions: the only input is the bytes given, nothing is read or fetched.

    format   blocks it yields
    txt      paragraphs (split on blank lines)
    md       headings (ATX and setext), paragraphs, list items, table rows, code as paragraphs
    html     headings h1-h6, paragraphs, list items, table rows (script/style/nav dropped)
    pdf      paragraphs and bulleted list items, page by page
    docx     headings ("Heading N" / "Título N" styles or outline level), paragraphs,
             list items, table rows
    csv      qa blocks: a header naming a question and an answer column
    json     qa blocks: [{question, answer}], {"items": [...]} or {question: answer}

Every block carries ``heading_path``: the texts of the headings above it. Text is NFC
(so "ação" typed on a Mac matches "ação" typed on Windows), without control characters,
zero-width spaces, soft hyphens or PDF ligatures. Text files are read as UTF-8 (with or
without BOM), UTF-16 with a BOM or a clear NUL pattern, else cp1252 (what Brazilian
Windows tools write), else latin-1.

Bad input never raises anything but ``ExtractionError``; its ``code`` is one of
unsupported_type, empty, corrupt, encrypted, too_large, no_text, bad_qa.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from html.parser import HTMLParser
from typing import Any, Literal

import docx
import pypdf
from docx.oxml.ns import qn
from docx.styles.style import BaseStyle
from docx.table import Table
from docx.text.paragraph import Paragraph
from pydantic import BaseModel, ConfigDict, Field

from agents_pipeline.errors import PipelineError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# A .docx is a zip: refuse one whose parts would inflate past this (a zip bomb).
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024

BlockKind = Literal["heading", "paragraph", "qa", "table_row", "list_item"]
DocumentFormat = Literal["txt", "md", "html", "pdf", "docx", "csv", "json"]
ExtractionCode = Literal[
    "unsupported_type", "empty", "corrupt", "encrypted", "too_large", "no_text", "bad_qa"
]


class ExtractionError(PipelineError):
    """The upload cannot be turned into text; ``code`` says why, for the user and for metrics."""

    retriable = False

    def __init__(self, code: ExtractionCode, message: str) -> None:
        super().__init__(message, code=code)
        self.code: ExtractionCode = code


class Block(BaseModel):
    """One structural piece of a document, in reading order."""

    model_config = ConfigDict(frozen=True)

    kind: BlockKind
    text: str = Field(description="The text; for qa the question, a newline, the answer.")
    level: int | None = Field(default=None, description="1-6, headings only.")
    question: str | None = None
    answer: str | None = None
    heading_path: list[str] = Field(
        default_factory=list, description="Texts of the headings above, outermost first."
    )


class ExtractedDocument(BaseModel):
    """What a document says, in order, ready for chunking."""

    model_config = ConfigDict(frozen=True)

    title: str = Field(description="The first heading, else the file name without extension.")
    format: DocumentFormat
    blocks: list[Block]


# --- format detection ------------------------------------------------------------------

_EXTENSIONS: dict[str, DocumentFormat] = {
    "txt": "txt",
    "text": "txt",
    "md": "md",
    "markdown": "md",
    "html": "html",
    "htm": "html",
    "xhtml": "html",
    "pdf": "pdf",
    "docx": "docx",
    "csv": "csv",
    "json": "json",
}
_MIME_TYPES: dict[str, DocumentFormat] = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "text/json": "json",
}


def _basename(filename: str) -> str:
    """The last path component, whether the client sent a POSIX or a Windows path."""
    return re.split(r"[\\/]", filename)[-1]


def _stem(filename: str | None) -> str:
    """The file name without directories or extension, a title of last resort."""
    if not filename:
        return ""
    name = _basename(filename)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return _clean_line(stem)


def detect_format(filename: str | None, mime_type: str | None) -> DocumentFormat:
    """The format by extension first (browsers guess MIME types badly), then by MIME type."""
    if filename:
        name = _basename(filename)
        if "." in name:
            found = _EXTENSIONS.get(name.rsplit(".", 1)[1].strip().lower())
            if found:
                return found
    if mime_type:
        found = _MIME_TYPES.get(mime_type.split(";", 1)[0].strip().lower())
        if found:
            return found
    raise ExtractionError(
        "unsupported_type", f"unsupported file type (filename={filename!r}, mime={mime_type!r})"
    )


# --- text cleanup ----------------------------------------------------------------------

_CHAR_MAP: dict[int, str | None] = {c: None for c in range(32) if c not in (9, 10)}
_CHAR_MAP.update({c: None for c in range(0x7F, 0xA0)})
# Lone UTF-16 surrogates (a JSON file's "\ud800"): not text, and UTF-8 cannot encode them.
_CHAR_MAP.update({c: None for c in range(0xD800, 0xE000)})
_CHAR_MAP.update(
    {
        0x0B: "\n",
        0x0C: "\n",
        0x2028: "\n",
        0x2029: "\n",
        0x00AD: None,  # soft hyphen
        0x200B: None,  # zero-width space (ZWJ/ZWNJ stay: emoji sequences need them)
        0x2060: None,  # word joiner
        0xFEFF: None,  # BOM / zero-width no-break space
        0xFB00: "ff",
        0xFB01: "fi",
        0xFB02: "fl",
        0xFB03: "ffi",
        0xFB04: "ffl",
        0xFB05: "st",
        0xFB06: "st",
    }
)


def _normalize(text: str) -> str:
    """NFC text with unified newlines and without invisible or control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text.translate(_CHAR_MAP))


def _clean(text: str, *, code: bool = False) -> str:
    """Block text: normalized, spaces collapsed, blank lines dropped (code keeps indentation)."""
    lines = _normalize(text).split("\n")
    if code:
        kept = [line.replace("\t", "    ").rstrip() for line in lines]
        return "\n".join(kept).strip("\n")
    return "\n".join(s for s in (" ".join(line.split()) for line in lines) if s)


def _clean_line(text: str) -> str:
    """Text on one line, for headings, titles and table cells."""
    return " ".join(_normalize(text).split())


def _fold(name: str) -> str:
    """A column or key name compared loosely: case, accents and punctuation ignored."""
    decomposed = unicodedata.normalize("NFKD", _clean_line(name).lower())
    return "".join(c for c in decomposed if c.isalnum())


# --- document builder ------------------------------------------------------------------


class _Builder:
    """Collects blocks and keeps the stack of open headings that gives each its path."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._open: list[tuple[int, str]] = []

    def path(self) -> list[str]:
        """Texts of the open headings, outermost first."""
        return [text for _, text in self._open]

    def heading(self, text: str, level: int) -> None:
        """Add a heading, closing those at its level or deeper."""
        text = _clean_line(text)
        if not text:
            return
        level = min(max(level, 1), 6)
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        self.blocks.append(Block(kind="heading", text=text, level=level, heading_path=self.path()))
        self._open.append((level, text))

    def add(self, kind: BlockKind, text: str, *, code: bool = False) -> None:
        """Add a paragraph, list item or table row, unless it has no text."""
        text = _clean(text, code=code)
        if text:
            self.blocks.append(Block(kind=kind, text=text, heading_path=self.path()))

    def qa(self, question: str, answer: str, section: str = "") -> None:
        """Add a question-answer pair (a section, such as a csv category, becomes its path)."""
        question, answer, section = _clean(question), _clean(answer), _clean_line(section)
        if question and answer:
            self.blocks.append(
                Block(
                    kind="qa",
                    text=f"{question}\n{answer}",
                    question=question,
                    answer=answer,
                    heading_path=[section] if section else self.path(),
                )
            )

    def document(
        self, fmt: DocumentFormat, filename: str | None, fallback_title: str = ""
    ) -> ExtractedDocument:
        """The finished document; no blocks at all means there was no text to extract."""
        if not self.blocks:
            raise ExtractionError("no_text", "the document has no extractable text")
        heading = next((b.text for b in self.blocks if b.kind == "heading"), "")
        title = heading or _clean_line(fallback_title) or _stem(filename)
        return ExtractedDocument(title=title, format=fmt, blocks=self.blocks)


def _row_text(cells: list[str], header: list[str] | None) -> str:
    """A table row that stands alone: "Col: value | Col: value" when the header is known."""
    if header and len(header) == len(cells):
        pairs = (f"{h}: {c}" if h else c for h, c in zip(header, cells, strict=True) if c)
        return " | ".join(pairs)
    return " | ".join(c for c in cells if c)


# --- plain text ------------------------------------------------------------------------


def _utf16_by_nul_pattern(data: bytes) -> str | None:
    """UTF-16 without a BOM shows as NULs in every other byte of mostly-ASCII text."""
    sample = data[:2000]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


def decode_text(data: bytes) -> str:
    """Bytes of a text file as str; NULs left after decoding mean it is binary, not text."""
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16", errors="replace")
    elif utf16 := _utf16_by_nul_pattern(data):
        text = data.decode(utf16, errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:  # cp1252 leaves five bytes undefined
                text = data.decode("latin-1")
    if "\x00" in text:
        raise ExtractionError("corrupt", "binary data in a text file")
    return text


def _extract_txt(data: bytes, filename: str | None) -> ExtractedDocument:
    """Paragraphs separated by blank lines; line breaks inside a paragraph are kept."""
    builder = _Builder()
    for paragraph in re.split(r"\n[ \t\f\v]*\n", _normalize(decode_text(data))):
        builder.add("paragraph", paragraph)
    return builder.document("txt", filename)


# --- markdown --------------------------------------------------------------------------

_MD_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_MD_ATX_CLOSE = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_HR = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_ITEM = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,9}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?(.*)$")
_MD_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_MD_REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*\S+")
_MD_TABLE_SEP = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_MD_INLINE: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"`+([^`]+?)`+"), r"\1"),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),
    (
        re.compile(r"\[([^\]]+)\]\(([^)\s]+)(?:[ \t]+\"[^\"]*\")?\)"),
        lambda m: m[1] if m[2].startswith("#") or m[2] == m[1] else f"{m[1]} ({m[2]})",
    ),
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),
    (re.compile(r"<((?:https?://|mailto:)[^>\s]+)>"), r"\1"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),
    (re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>"), " "),
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])"), r"\1"),
]


def _md_inline(text: str) -> str:
    """Markdown inline markup lightly removed; a link keeps its address for the agent to share."""
    for pattern, repl in _MD_INLINE:
        text = pattern.sub(repl, text)
    return text


def _md_cells(line: str) -> list[str]:
    """The cells of a pipe-table line."""
    line = line.strip()
    line = line.removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [_clean_line(_md_inline(cell)) for cell in re.split(r"(?<!\\)\|", line)]


def _md_front_matter_end(lines: list[str]) -> int:
    """Index of the first line after a leading YAML front matter, or 0 if there is none."""
    if not lines or lines[0].strip() != "---":
        return 0
    for i, line in enumerate(lines[1:100], start=1):
        if line.strip() in ("---", "..."):
            return i + 1
    return 0


def _extract_md(data: bytes, filename: str | None) -> ExtractedDocument:
    """A line-based Markdown reader: enough CommonMark for knowledge documents."""
    text = re.sub(r"<!--.*?-->", "", _normalize(decode_text(data)), flags=re.DOTALL)
    lines = text.split("\n")
    builder = _Builder()
    pending: list[str] = []
    pending_kind: BlockKind = "paragraph"

    def flush() -> None:
        nonlocal pending_kind
        if pending:
            builder.add(pending_kind, _md_inline(" ".join(pending)))
            pending.clear()
        pending_kind = "paragraph"

    i = _md_front_matter_end(lines)
    while i < len(lines):
        line = lines[i]
        i += 1
        if fence := _MD_FENCE.match(line):
            flush()
            marker = fence[1]
            code: list[str] = []
            while i < len(lines) and not re.match(
                rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$", lines[i]
            ):
                code.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end of the file)
            builder.add("paragraph", "\n".join(code), code=True)
        elif not line.strip():
            flush()
        elif atx := _MD_ATX.match(line):
            flush()
            builder.heading(_md_inline(_MD_ATX_CLOSE.sub("", (atx[2] or "").strip())), len(atx[1]))
        elif pending and pending_kind == "paragraph" and _MD_SETEXT.match(line):
            level = 1 if line.strip().startswith("=") else 2
            builder.heading(_md_inline(" ".join(pending)), level)
            pending.clear()
        elif _MD_HR.match(line):
            flush()
        elif "|" in line and i < len(lines) and "|" in lines[i] and _MD_TABLE_SEP.match(lines[i]):
            flush()
            header = _md_cells(line)
            i += 1
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                builder.add("table_row", _row_text(_md_cells(lines[i]), header))
                i += 1
        elif item := _MD_ITEM.match(line):
            flush()
            pending.append(item[1].strip())
            pending_kind = "list_item"
        elif _MD_REFDEF.match(line):
            continue
        else:
            content = _MD_QUOTE.sub("", line).strip()
            if content:
                pending.append(content)
    flush()
    return builder.document("md", filename)


# --- html ------------------------------------------------------------------------------

_HTML_DROPPED = frozenset(
    {"script", "style", "nav", "noscript", "template", "svg", "iframe", "object", "canvas"}
    | {"button", "select", "math"}
)
_HTML_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param"}
    | {"source", "track", "wbr"}
)
_HTML_BLOCK = frozenset(
    {"address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details"}
    | {"dl", "div", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header"}
    | {"html", "legend", "main", "ol", "p", "section", "summary", "ul", "tbody", "thead"}
    | {"tfoot"}
)
_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}


class _HTMLReader(HTMLParser):
    """Streams HTML into a builder: block elements end a block, table rows become rows."""

    def __init__(self, builder: _Builder) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = builder
        self.title = ""
        self._in_title = False
        self._dropped = 0  # depth inside elements whose text is dropped
        self._buf: list[str] = []
        self._heading = 0  # level of the open heading, 0 outside one
        self._pre = 0
        self._li_depth = 0
        self._list_depths: list[int] = []
        self._row: list[str] | None = None
        self._row_all_th = True
        self._cell: list[str] | None = None
        self._tables: list[tuple[list[str] | None, int]] = []  # (header, rows seen) per table

    # -- text sinks --
    def _flush(self) -> None:
        text, self._buf = "".join(self._buf), []
        if self._heading:
            self.builder.heading(text, self._heading)
        elif self._pre:
            self.builder.add("paragraph", text, code=True)
        else:
            self.builder.add("list_item" if self._li_depth else "paragraph", text)

    def _end_cell(self) -> None:
        if self._cell is not None and self._row is not None:
            self._row.append(_clean_line("".join(self._cell)))
        self._cell = None

    def _end_row(self) -> None:
        self._end_cell()
        row, self._row = self._row, None
        if not row or not any(row):
            return
        header, seen = self._tables[-1] if self._tables else (None, 1)
        if self._row_all_th and header is None and seen == 0 and self._tables:
            self._tables[-1] = (row, 1)
            return
        if self._tables:
            self._tables[-1] = (header, seen + 1)
        self.builder.add("table_row", _row_text(row, header))

    # -- parser callbacks --
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and not self._dropped:
            self._in_title = True
            return
        if tag in _HTML_VOID:
            if tag == "br" and not self._dropped:
                self._append("\n")
            elif tag == "hr" and self._row is None:
                self._flush()
            return
        if self._dropped or tag in _HTML_DROPPED:
            self._dropped += tag in _HTML_DROPPED
            return
        if self._row is not None and tag not in ("tr", "td", "th", "table"):
            if self._cell is not None:
                self._cell.append(" ")
            return
        if tag == "table":
            self._flush()
            self._tables.append((None, 0))
        elif tag == "tr":
            self._flush()
            self._end_row()
            self._row, self._row_all_th = [], True
        elif tag in ("td", "th"):
            if self._row is None:
                self._row, self._row_all_th = [], True
            self._end_cell()
            self._cell = []
            self._row_all_th = self._row_all_th and tag == "th"
        elif tag in _HTML_HEADINGS:
            self._flush()
            self._heading = _HTML_HEADINGS[tag]
        elif tag == "li":
            self._flush()
            if self._li_depth <= (self._list_depths[-1] if self._list_depths else 0):
                self._li_depth += 1
        elif tag in ("ul", "ol"):
            self._flush()
            self._list_depths.append(self._li_depth)
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag in _HTML_BLOCK:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            return
        if self._dropped:
            self._dropped -= tag in _HTML_DROPPED
            return
        if self._row is not None and tag not in ("tr", "td", "th", "table"):
            return
        if tag == "table":
            self._end_row()
            if self._tables:
                self._tables.pop()
        elif tag == "tr":
            self._end_row()
        elif tag in ("td", "th"):
            self._end_cell()
        elif tag in _HTML_HEADINGS:
            self._flush()
            self._heading = 0
        elif tag == "li":
            self._flush()
            floor = self._list_depths[-1] if self._list_depths else 0
            self._li_depth = max(floor, self._li_depth - 1)
        elif tag in ("ul", "ol"):
            self._flush()
            self._li_depth = self._list_depths.pop() if self._list_depths else 0
        elif tag == "pre":
            self._flush()
            self._pre = max(0, self._pre - 1)
        elif tag in _HTML_BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._dropped:
            self._append(data if self._pre else re.sub(r"\s+", " ", data))

    def _append(self, text: str) -> None:
        """Text into the open cell, or the open block (text between table cells is lost)."""
        if self._cell is not None:
            self._cell.append(text)
        elif self._row is None:
            self._buf.append(text)

    def close(self) -> None:
        super().close()
        self._end_row()
        self._flush()


def _extract_html(data: bytes, filename: str | None) -> ExtractedDocument:
    """Visible text of a page, by its structure; the <title> is a fallback title."""
    builder = _Builder()
    reader = _HTMLReader(builder)
    reader.feed(decode_text(data))
    reader.close()
    return builder.document("html", filename, fallback_title=reader.title)


# --- pdf -------------------------------------------------------------------------------

_PDF_BULLET = re.compile("^(?:[•▪◦●■□➢➤►‣\u2043∙·\\-\u2013*]|\\d{1,3}[.)])\\s+")
_PDF_SENTENCE_END = (".", "!", "?", ":", "…")


def _pdf_blocks(text: str) -> Iterator[tuple[BlockKind, str]]:
    """Paragraphs of a page's text: wrapped lines joined (and de-hyphenated), bullets apart.

    pypdf gives one line per text line and rarely a blank line between paragraphs, so a
    line that ends a sentence, or stops well short of the page's longest line (a title,
    the last line of a paragraph), ends a paragraph when the next starts with a capital.
    """
    lines = [" ".join(raw.split()) for raw in _normalize(text).split("\n")]
    short = 0.6 * max((len(line) for line in lines), default=0)
    kind: BlockKind = "paragraph"
    current, previous = "", ""
    for line in lines:
        bullet = _PDF_BULLET.match(line)
        ends = previous.endswith(_PDF_SENTENCE_END) or len(previous) < short
        if not line or bullet or (ends and not line[0].islower()):
            if current:
                yield kind, current
            kind, current = "paragraph", ""
        previous = line
        if not line:
            continue
        if bullet:
            kind, line = "list_item", line[bullet.end() :]
        if not current:
            current = line
        elif current.endswith("-") and current[-2:-1].isalpha() and line[:1].islower():
            current = current[:-1] + line
        else:
            current = f"{current} {line}"
    if current:
        yield kind, current


def _extract_pdf(data: bytes, filename: str | None) -> ExtractedDocument:
    """Text of each page with pypdf; a scan without a text layer has none ("no_text")."""
    if b"%PDF-" not in data[:1024]:
        raise ExtractionError("corrupt", "not a PDF file (no %PDF- header)")
    reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            opened = bool(reader.decrypt(""))
        except Exception:  # unsupported algorithm or broken encryption dictionary
            opened = False
        if not opened:
            raise ExtractionError("encrypted", "the PDF is password-protected")
    builder = _Builder()
    failed_pages = 0
    for page in reader.pages:
        try:
            text = page.extract_text() or ""
        except Exception:  # one broken page must not lose the others
            failed_pages += 1
            continue
        for kind, paragraph in _pdf_blocks(text):
            builder.add(kind, paragraph)
    if failed_pages and not builder.blocks:
        raise ExtractionError("corrupt", "no page of the PDF could be read")
    return builder.document("pdf", filename)


# --- docx ------------------------------------------------------------------------------

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_DOCX_HEADING = re.compile(r"^(?:heading|t[ií]tulo|ttulo|cabe[çc]alho)\s*([1-9])$", re.IGNORECASE)
_DOCX_TITLE = frozenset({"title", "título", "titulo"})


def _check_docx_zip(data: bytes) -> None:
    """Refuse what is not a Word zip before python-docx reads every part into memory."""
    if data.startswith(_OLE_MAGIC):
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise ExtractionError("encrypted", "the Word document is password-protected")
        raise ExtractionError("corrupt", "not a .docx (a legacy .doc?): save it as .docx")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ExtractionError("corrupt", "the .docx file is damaged") from exc
    if sum(info.file_size for info in infos) > MAX_UNZIPPED_BYTES:
        raise ExtractionError("too_large", "the .docx expands to too much data")
    if not any(info.filename == "word/document.xml" for info in infos):
        raise ExtractionError("corrupt", "the zip file is not a Word document")


def _style_chain(style: BaseStyle | None) -> Iterator[BaseStyle]:
    """A style and those it is based on (a custom heading style may inherit "Heading 2")."""
    for _ in range(8):
        if style is None:
            return
        yield style
        style = getattr(style, "base_style", None)


def _docx_heading_level(paragraph: Paragraph) -> int | None:
    """The heading level from the style (English or Portuguese names) or the outline level."""
    for style in _style_chain(paragraph.style):
        for name in (style.name or "", style.style_id or ""):
            if match := _DOCX_HEADING.match(name.strip()):
                return min(int(match[1]), 6)
            if name.strip().lower() in _DOCX_TITLE:
                return 1
    outline = paragraph._p.xpath("./w:pPr/w:outlineLvl/@w:val")
    if outline and str(outline[0]).isdigit() and int(outline[0]) < 9:
        return min(int(outline[0]) + 1, 6)
    return None


def _docx_is_list(paragraph: Paragraph) -> bool:
    """Numbered or bulleted: a list style or numbering properties on the paragraph."""
    name = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
    return "list" in name or "lista" in name or bool(paragraph._p.xpath("./w:pPr/w:numPr"))


def _docx_table(table: Table, builder: _Builder) -> None:
    """Each row a table_row; a row marked "repeat as header row" labels the rows below."""
    header: list[str] | None = None
    for index, row in enumerate(table.rows):
        seen: set[int] = set()
        cells: list[str] = []
        for cell in row.cells:  # merged cells repeat: keep each once
            if id(cell._tc) not in seen:
                seen.add(id(cell._tc))
                cells.append(_clean_line(cell.text))
        if not any(cells):
            continue
        tr_pr = row._tr.trPr
        if index == 0 and tr_pr is not None and tr_pr.find(qn("w:tblHeader")) is not None:
            header = cells
            continue
        builder.add("table_row", _row_text(cells, header))


def _extract_docx(data: bytes, filename: str | None) -> ExtractedDocument:
    """Body paragraphs and tables in document order (headers, footers and notes skipped)."""
    _check_docx_zip(data)
    document = docx.Document(io.BytesIO(data))
    builder = _Builder()
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            _docx_table(item, builder)
        elif (level := _docx_heading_level(item)) is not None:
            builder.heading(item.text, level)
        else:
            builder.add("list_item" if _docx_is_list(item) else "paragraph", item.text)
    return builder.document("docx", filename)


# --- question-answer files -------------------------------------------------------------

_QUESTION_KEYS = frozenset({"question", "questions", "pergunta", "perguntas", "q", "p"})
_QUESTION_KEYS |= {"questao", "questoes"}
_ANSWER_KEYS = frozenset({"answer", "answers", "resposta", "respostas", "a", "r"})
_SECTION_KEYS = frozenset({"category", "categoria", "section", "secao", "topic", "topico"})
_SECTION_KEYS |= {"tema", "assunto"}
_LIST_KEYS = frozenset({"items", "faq", "faqs"})
_CSV_DELIMITERS = (",", ";", "\t", "|")
_CSV_HEADER_SEARCH_ROWS = 5


def _find_key(names: Iterable[str], wanted: frozenset[str]) -> int | None:
    """Index of the first name that folds to one of ``wanted``."""
    return next((i for i, name in enumerate(names) if _fold(name) in wanted), None)


def _cell(row: list[str], col: int | None) -> str:
    """A csv cell, or "" where the row is short or the column absent."""
    return row[col] if col is not None and col < len(row) else ""


def _csv_with_header(text: str) -> tuple[list[str], Iterator[list[str]]]:
    """The question-answer header row and the rows after it.

    The header may sit below a title row, and the delimiter is whichever of , ; tab |
    finds it, tried in order of use in the first line (Excel in pt-BR writes ";").
    """
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    for delimiter in sorted(_CSV_DELIMITERS, key=lambda d: -first_line.count(d)):
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        rows = (row for row in reader if any(cell.strip() for cell in row))
        for row in itertools.islice(rows, _CSV_HEADER_SEARCH_ROWS):
            if (
                _find_key(row, _QUESTION_KEYS) is not None
                and _find_key(row, _ANSWER_KEYS) is not None
            ):
                return row, rows
    raise ExtractionError(
        "bad_qa", "the csv header needs a question (pergunta) and an answer (resposta) column"
    )


def _extract_csv(data: bytes, filename: str | None) -> ExtractedDocument:
    """Rows of a csv whose header names the question and answer columns."""
    header, rows = _csv_with_header(decode_text(data))
    q_col, a_col = _find_key(header, _QUESTION_KEYS), _find_key(header, _ANSWER_KEYS)
    s_col = _find_key(header, _SECTION_KEYS)
    builder = _Builder()
    for row in rows:
        builder.qa(_cell(row, q_col), _cell(row, a_col), _cell(row, s_col))
    return builder.document("csv", filename)


def _scalar(value: Any) -> str:
    """A JSON value usable as text (strings and numbers), else ""."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _json_items(value: Any) -> list[Any] | None:
    """The list of question objects, wherever the file keeps it."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key, items in value.items():
            if _fold(key) in _LIST_KEYS and isinstance(items, list):
                return items
    return None


def _extract_json(data: bytes, filename: str | None) -> ExtractedDocument:
    """Question-answer pairs from the three JSON shapes knowledge bases are exported in."""
    try:
        value = json.loads(decode_text(data))
    except ValueError as exc:
        raise ExtractionError("corrupt", f"invalid JSON: {exc}") from exc
    builder = _Builder()
    items = _json_items(value)
    if items is not None:
        recognised = False
        for item in items:
            if not isinstance(item, dict):
                continue
            keys = list(item)
            q_key, a_key = _find_key(keys, _QUESTION_KEYS), _find_key(keys, _ANSWER_KEYS)
            if q_key is None or a_key is None:
                continue
            recognised = True
            s_key = _find_key(keys, _SECTION_KEYS)
            section = _scalar(item[keys[s_key]]) if s_key is not None else ""
            builder.qa(_scalar(item[keys[q_key]]), _scalar(item[keys[a_key]]), section)
        if items and not recognised:
            raise ExtractionError(
                "bad_qa", "the JSON objects need question (pergunta) and answer (resposta) keys"
            )
    elif isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
        for question, answer in value.items():
            builder.qa(question, answer)
    else:
        raise ExtractionError(
            "bad_qa", 'expected a list of {"question", "answer"} objects or a question→answer map'
        )
    return builder.document("json", filename)


# --- entry point -----------------------------------------------------------------------

_EXTRACTORS: dict[DocumentFormat, Callable[[bytes, str | None], ExtractedDocument]] = {
    "txt": _extract_txt,
    "md": _extract_md,
    "html": _extract_html,
    "pdf": _extract_pdf,
    "docx": _extract_docx,
    "csv": _extract_csv,
    "json": _extract_json,
}


def extract(
    data: bytes,
    *,
    filename: str | None = None,
    mime_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ExtractedDocument:
    """The blocks of an uploaded document; any problem with the bytes is an ExtractionError."""
    fmt = detect_format(filename, mime_type)
    if len(data) > max_bytes:
        raise ExtractionError("too_large", f"the file is over {max_bytes} bytes")
    if not data.strip():
        raise ExtractionError("empty", "the file is empty")
    try:
        return _EXTRACTORS[fmt](data, filename)
    except ExtractionError:
        raise
    except Exception as exc:  # parsers of damaged files raise anything (KeyError, zlib...)
        detail = f"{type(exc).__name__}: {exc}"[:160]
        raise ExtractionError("corrupt", f"could not read the {fmt} file ({detail})") from exc
