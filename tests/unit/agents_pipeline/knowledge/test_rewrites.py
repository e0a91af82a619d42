"""The linear-time readers give what the code they replaced gave, on generated input.

The references below are the replaced code itself (the regular expressions of extract.py
and chunking.py, html.parser, python-docx's own lookups): on the short inputs generated
here they are fast, and any input on which the two disagree is a bug in the rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import docx
import pytest
from docx.document import Document
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.text.paragraph import Paragraph
from hypothesis import given, settings
from hypothesis import strategies as st

from agents_pipeline.knowledge.chunking import _ABBREVIATIONS, _CLOSING, _OPENING, _sentence_starts
from agents_pipeline.knowledge.extract import (
    _DOCX_HEADING,
    _DOCX_TITLE,
    _docx_rows,
    _DocxStyles,
    _md_heading_text,
    _md_table_separator,
    _pdf_blocks,
)
from agents_pipeline.knowledge.html_lexer import HTMLLexer
from agents_pipeline.knowledge.markdown_inline import (
    _autolinks,
    _code_spans,
    _emphasis,
    _escapes,
    _html_tags,
    _images,
    _links,
    _paired,
    _reference_links,
    strip_html_comments,
    strip_inline,
)

_REFERENCE: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
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
_STEPS = [
    _code_spans,
    _images,
    _links,
    _reference_links,
    _autolinks,
    _paired("**", "__"),
    _paired("~~"),
    _emphasis("*"),
    _emphasis("_"),
    _html_tags,
    _escapes,
]

# Markup characters, the words around them, and the whitespace the patterns care about.
_PIECES = st.sampled_from(
    [*'`![]()<>*_~-/#:"\\ \t\n\u00a0é1a', "**", "__", "~~", "http://", "mailto:", "a b", "x"]
)
_MARKDOWNISH = st.lists(_PIECES, max_size=40).map("".join)


@pytest.mark.parametrize("index", range(len(_STEPS)))
@settings(max_examples=400, deadline=None)
@given(text=_MARKDOWNISH)
def test_each_step_matches_its_pattern(index: int, text: str) -> None:
    pattern, repl = _REFERENCE[index]
    assert _STEPS[index](text) == pattern.sub(repl, text)


@settings(max_examples=400, deadline=None)
@given(text=_MARKDOWNISH)
def test_all_steps_match_the_patterns_in_order(text: str) -> None:
    expected = text
    for pattern, repl in _REFERENCE:
        expected = pattern.sub(repl, expected)
    assert strip_inline(text) == expected


@settings(max_examples=400, deadline=None)
@given(
    text=st.lists(st.sampled_from(["<!--", "-->", "-", ">", "<", "!", "a", "\n"]), max_size=30).map(
        "".join
    )
)
def test_comments_match_their_pattern(text: str) -> None:
    assert strip_html_comments(text) == re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)


@pytest.mark.parametrize(
    "text",
    [
        "**a __b** c__",
        'Veja [o site](https://loja.com.br "Loja") e [topo](#topo).',
        "![logo](a.png) `code` <https://x.y> ~~old~~ *ênfase* _itálico_ <b>negrito</b> \\*",
        "snake_case_name and 2*3*4",
    ],
)
def test_examples(text: str) -> None:
    expected = text
    for pattern, repl in _REFERENCE:
        expected = pattern.sub(repl, expected)
    assert strip_inline(text) == expected


# --- Markdown lines ----------------------------------------------------------------------

_ATX_CLOSE = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_TABLE_SEP = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_LINE = st.lists(st.sampled_from([*"#|-: \t\u00a0a:", "##", "--"]), max_size=25).map("".join)


@settings(max_examples=1000, deadline=None)
@given(text=_LINE)
def test_heading_text_matches_the_closing_pattern(text: str) -> None:
    assert _md_heading_text(text) == _ATX_CLOSE.sub("", text.strip())


@settings(max_examples=1000, deadline=None)
@given(line=_LINE)
def test_table_separator_matches_its_pattern(line: str) -> None:
    assert _md_table_separator(line) == bool(_TABLE_SEP.match(line))


# --- sentences ---------------------------------------------------------------------------

_SENTENCE_END = re.compile(rf"[.!?…]+[{re.escape(_CLOSING)}]*(?=\s)")
_DOTTED = re.compile(r"^(?:[^\W\d_]{1,3}\.){2,}$")


def _old_sentence_starts(text: str) -> list[int]:
    """chunking._sentence_starts as it was (a regex and a copy of the rest per sentence)."""

    def abbreviation(before: str) -> bool:
        words = before.split()
        word = words[-1].lstrip(_OPENING) if words else ""
        if not word:
            return False
        if len(word) == 1 and word.isalpha():
            return True
        return word.lower() in _ABBREVIATIONS or bool(_DOTTED.match(word + "."))

    starts = [0]
    for match in _SENTENCE_END.finditer(text):
        rest = text[match.end() :]
        following = rest.lstrip()
        if not following:
            break
        punctuation = match[0].rstrip(_CLOSING)
        first = following.lstrip(_OPENING)[:1]
        strong = "!" in punctuation or "?" in punctuation
        if not strong and first.islower():
            continue
        if punctuation == "." and abbreviation(text[starts[-1] : match.start()]):
            continue
        starts.append(match.end() + len(rest) - len(following))
    return starts


_PROSE = st.lists(
    st.sampled_from(
        [*".!?…\"')»« \n\tAa1-", "Sr.", "Dra. ", "p.ex.", "S.A.", "ação", " E", "(Ver", "...", "?!"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=1500, deadline=None)
@given(text=_PROSE)
def test_sentence_starts_match_the_pattern(text: str) -> None:
    assert _sentence_starts(text) == _old_sentence_starts(text)


# --- pdf paragraphs ----------------------------------------------------------------------


def _old_pdf_blocks(text: str) -> list[tuple[str, str]]:
    """extract._pdf_blocks as it was (the paragraph grown one string copy per line)."""
    from agents_pipeline.knowledge.extract import _PDF_BULLET, _PDF_SENTENCE_END, _normalize

    out = []
    lines = [" ".join(raw.split()) for raw in _normalize(text).split("\n")]
    short = 0.6 * max((len(line) for line in lines), default=0)
    kind, current, previous = "paragraph", "", ""
    for line in lines:
        bullet = _PDF_BULLET.match(line)
        ends = previous.endswith(_PDF_SENTENCE_END) or len(previous) < short
        if not line or bullet or (ends and not line[0].islower()):
            if current:
                out.append((kind, current))
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
        out.append((kind, current))
    return out


_PAGE = st.lists(
    st.sampled_from(["\n", "a", "A", "-", "• ", "1. ", "texto longo de uma linha", ".", " ", "é"]),
    max_size=40,
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(text=_PAGE)
def test_pdf_paragraphs_match_the_old_joining(text: str) -> None:
    assert list(_pdf_blocks(text)) == _old_pdf_blocks(text)


# --- html --------------------------------------------------------------------------------


class _Reference(HTMLParser):
    """html.parser's events, as extract.py received them before."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.events.append(("start", tag))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.events.append(("data", data))


class _Lexed(HTMLLexer):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def start(self, tag: str) -> None:
        self.events.append(("start", tag))

    def end(self, tag: str) -> None:
        self.events.append(("end", tag))

    def data(self, text: str) -> None:
        self.events.append(("data", text))


def _merged(events: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Adjacent text joined (html.parser splits text at arbitrary points)."""
    out: list[tuple[str, str]] = []
    for kind, value in events:
        if kind == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + value)
        elif kind != "data" or value:
            out.append((kind, value))
    return out


def _events(parser: _Reference | _Lexed, text: str) -> list[tuple[str, str]]:
    parser.feed(text)
    parser.close()
    return _merged(parser.events)


_ATTR = st.tuples(
    st.sampled_from([" ", "  ", "\n", "\t"]),
    st.sampled_from(["a", "href", "data-x", "B"]),
    st.sampled_from(['="x>y"', "='a\"b'", "=v", '=""', "='/'", '="a/"', "=x/", "", '="&amp;"']),
).map("".join)
_TAG_NAMES = [
    *("p", "div", "b", "BR", "img", "li", "ul", "table", "tr", "td", "th", "h1", "title"),
    *("span", "a", "script", "style", "pre", "nav"),
]
_TAG = st.tuples(
    st.sampled_from(_TAG_NAMES),
    st.lists(_ATTR, max_size=3).map("".join),
    st.sampled_from([">", "/>", " />", " >"]),
).map(lambda t: f"<{t[0]}{t[1]}{t[2]}")
_END_TAG = st.sampled_from(["p", "div", "b", "li", "table", "tr", "td", "SCRIPT", "style"]).map(
    lambda name: f"</{name}>"
)
_OTHER = st.sampled_from(
    [
        *("<!-- c -->", "<!-- a -- b -- >", "<!---->", "<!DOCTYPE html>", "<![CDATA[x<y]]>"),
        *("<?xml version='1.0'?>", "texto ", "a &amp; b", " &lt; ", "x < y", "\n", "R$ 5"),
        *("ação", "&nbsp;", "3 > 2", "&#233;", "</>", "<3", "a<b c"),
    ]
)
_HTML = st.lists(st.one_of(_TAG, _END_TAG, _OTHER), max_size=30).map("".join)


@settings(max_examples=1500, deadline=None)
@given(text=_HTML)
def test_html_events_match_html_parser(text: str) -> None:
    assert _events(_Lexed(), text) == _events(_Reference(), text)


_SOUP = st.lists(
    st.sampled_from([*"<>/!-='\" \na&;#]", "<!--", "-->", "<a", "</", "<![", "<p>", "</p>"]),
    max_size=40,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=_SOUP)
def test_html_lexer_reads_any_tag_soup(text: str) -> None:
    events = _events(_Lexed(), text)  # never raises, whatever html.parser would do
    assert all(kind in ("start", "end", "data") for kind, _ in events)


# --- docx --------------------------------------------------------------------------------


def _docx_with_merges_and_styles() -> Document:
    """Styles based on others (and of the wrong type), and a table merged both ways."""
    document = docx.Document()
    styles = document.styles
    mine = styles.add_style("Meu Título", WD_STYLE_TYPE.PARAGRAPH)
    mine.base_style = styles["Heading 2"]
    deeper = styles.add_style("Mais Fundo", WD_STYLE_TYPE.PARAGRAPH)
    deeper.base_style = mine
    styles.add_style("Minha Lista", WD_STYLE_TYPE.PARAGRAPH)
    styles.add_style("Destaque", WD_STYLE_TYPE.CHARACTER)
    for name in ("Meu Título", "Mais Fundo", "Minha Lista", "Title", "Normal", "List Bullet"):
        document.add_paragraph(f"Parágrafo em {name}", style=name)
    for style_id in ("Destaque", "NaoExiste"):  # not a paragraph style: the default one
        document.add_paragraph(f"Estilo {style_id}")._p.style = style_id
    outlined = document.add_paragraph("Nível de tópico 3")
    outline = OxmlElement("w:outlineLvl")
    outline.set(qn("w:val"), "2")
    outlined._p.get_or_add_pPr().append(outline)
    table = document.add_table(rows=5, cols=4)
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            cell.text = f"{r}{c}"
    table.cell(0, 0).merge(table.cell(0, 1))  # across
    table.cell(1, 0).merge(table.cell(3, 0))  # down
    table.cell(1, 2).merge(table.cell(2, 3))  # both
    table.cell(4, 1).merge(table.cell(4, 3))
    return document


def _old_style_level(paragraph: Paragraph) -> int | None:
    """The heading level as extract.py found it before: python-docx's style lookups."""
    style = paragraph.style
    for _ in range(8):
        if style is None:
            return None
        for name in (style.name or "", style.style_id or ""):
            if match := _DOCX_HEADING.match(name.strip()):
                return min(int(match[1]), 6)
            if name.strip().lower() in _DOCX_TITLE:
                return 1
        style = style.base_style
    return None


def test_docx_styles_are_judged_as_python_docx_reads_them() -> None:
    document = _docx_with_merges_and_styles()
    styles = _DocxStyles(document)
    judged = {}
    for paragraph in document.paragraphs:
        name = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
        expected = (_old_style_level(paragraph), "list" in name or "lista" in name)
        judged[paragraph.text] = styles.judge(paragraph)
        assert judged[paragraph.text] == expected
    assert judged["Parágrafo em Mais Fundo"] == (2, False)  # through two base styles
    assert judged["Parágrafo em Minha Lista"] == (None, True)
    assert judged["Parágrafo em Title"] == (1, False)
    assert judged["Estilo Destaque"] == judged["Estilo NaoExiste"] == (None, False)


def test_docx_rows_are_python_docx_cells_once_each() -> None:
    table = _docx_with_merges_and_styles().tables[0]
    for row, (tr, tcs) in zip(table.rows, _docx_rows(table), strict=True):
        expected: list[object] = []
        for cell in row.cells:
            if cell._tc not in expected:
                expected.append(cell._tc)
        assert tr is row._tr
        assert list(dict.fromkeys(tcs)) == expected
