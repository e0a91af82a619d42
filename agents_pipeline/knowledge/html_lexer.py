"""HTML → start tags, end tags and text, in linear time: what ``html.parser`` gave us, bounded.

``html.parser.HTMLParser`` (Python 3.11) re-scans to the end of the input for every ``<``
of an unfinished construct (``<a<a<a…``: a megabyte took hours, with the GIL held), and its
comment and marked-section patterns backtrack over runs of ``-`` or ``]``. This lexer gives
the same events for the same documents (tests/unit/agents_pipeline/knowledge/ checks it on
generated HTML) and reads every character a bounded number of times:

* a start tag's end is found by one pattern without backtracking (possessive and atomic
  groups): the first ``>`` outside a quoted attribute value. Only within that span does it
  run html.parser's own patterns, which are linear on a span that ends with its ``>``;
* once no ``>`` is left in the document, the rest is text (as html.parser ends up deciding,
  one ``<`` at a time);
* the closing searches (``-->``, ``]]>``) start from the ``>``s and look back, and remember
  where they found nothing.

Where html.parser would have read a tag differently from the span found — an attribute
quote that is never closed, or a tag that ends where the document does — the span is text
or the rest of the document is text, instead of html.parser's piecemeal reading (or its
``AssertionError`` on an unknown ``<![`` section). Only broken markup reads differently.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import attrfind_tolerant, locatestarttagend_tolerant, tagfind_tolerant

__all__ = ["HTMLLexer"]

# From the end of a start tag's name to its ">": quoted values only right after "=", as in
# html.parser and browsers; an unclosed quote is an ordinary character. Nothing backtracks.
_TAG_REST = re.compile(r"""(?>[^>"'=]++|=\s*+(?>"[^"]*+"|'[^']*+'|)|["'])*+>""")
_TAG_NAME_END = re.compile(r"[\t\n\r\f />\x00]")
_END_TAG = re.compile(r"</\s*([a-zA-Z][-.a-zA-Z0-9:_]*)\s*>")  # html.parser's endtagfind
_DECL_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*\s*")  # _markupbase's _declname_match
# Closers: literal pieces that may have spaces between them and before the ">".
_COMMENT_END = ("--",)  # --\s*>
_SECTION_END = ("]", "]")  # ]\s*]\s*>
_MS_SECTION_END = ("]",)  # ]\s*> (MS Office's <![if ...]>)
_MARKED_SECTIONS = dict.fromkeys(("temp", "cdata", "ignore", "include", "rcdata"), _SECTION_END)
_MARKED_SECTIONS.update(dict.fromkeys(("if", "else", "endif"), _MS_SECTION_END))


class HTMLLexer:
    """Calls ``start``, ``end`` and ``data`` as ``HTMLParser(convert_charrefs=True)`` calls
    ``handle_starttag``, ``handle_endtag`` and ``handle_data`` (text unescaped, script and
    style content raw); ``<br/>`` is a start and an end, as there. Comments, doctypes and
    processing instructions are skipped.
    """

    CDATA_CONTENT_ELEMENTS = ("script", "style")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._text = ""
        self._no_close: dict[tuple[str, ...], int] = {}  # closer -> a start none follows

    # -- what a subclass receives --
    def start(self, tag: str) -> None:
        """A start tag (lower case)."""

    def end(self, tag: str) -> None:
        """An end tag (lower case)."""

    def data(self, text: str) -> None:
        """Text between tags."""

    # -- input --
    def feed(self, text: str) -> None:
        """Add text; it is read on ``close`` (documents arrive whole)."""
        self._parts.append(text)

    def close(self) -> None:
        """Read everything fed."""
        self._text = "".join(self._parts)
        self._parts = []
        self._run()

    # -- the loop (html.parser's goahead with end=True) --
    def _run(self) -> None:
        text = self._text
        n = len(text)
        last_gt = text.rfind(">")
        cdata: re.Pattern[str] | None = None
        cdata_tag = ""
        i = 0
        while i < n:
            if cdata is not None:
                close = cdata.search(text, i)
                if close is None:
                    return  # an unclosed <script>: html.parser keeps the rest unread too
                if i < close.start():
                    self.data(text[i : close.start()])
                self.end(cdata_tag)
                cdata, i = None, close.end()
                continue
            j = text.find("<", i)
            if j < 0 or j >= last_gt:  # no ">" after this "<": nothing but text is left
                self.data(unescape(text[i:]))
                return
            if i < j:
                self.data(unescape(text[i:j]))
            i = j
            nxt = text[i + 1]
            if nxt.isascii() and nxt.isalpha():
                k, opened = self._start_tag(i)
                if opened in self.CDATA_CONTENT_ELEMENTS:
                    cdata_tag = opened
                    cdata = re.compile(rf"</\s*{opened}\s*>", re.IGNORECASE)
            elif nxt == "/":
                k = self._end_tag(i)
            elif text.startswith("<!--", i):
                k = self._closed_by(i + 4, _COMMENT_END)
            elif nxt == "?":
                k = text.find(">", i + 2) + 1 or -1
            elif nxt == "!":
                k = self._declaration(i)
            else:
                self.data("<")
                k = i + 1
            if k < 0:  # unfinished: text up to the next ">" (there is one)
                k = text.find(">", i + 1) + 1
                self.data(unescape(text[i:k]))
            i = k

    def _start_tag(self, i: int) -> tuple[int, str | None]:
        """Where the tag at ``i`` ends, and its name if it opened an element."""
        text = self._text
        name_end = _TAG_NAME_END.search(text, i + 2)
        rest = _TAG_REST.match(text, name_end.start()) if name_end else None
        if rest is None:  # no ">" outside quotes before the end: the rest is text
            self.data(unescape(text[i:]))
            return len(text), None
        span = text[i : rest.end()]
        if _tag_end(span) != len(span):  # html.parser would read it otherwise: keep it as text
            self.data(unescape(span))
            return rest.end(), None
        found = tagfind_tolerant.match(span, 1)
        assert found is not None  # the span starts with "<" and a letter
        k = found.end()
        tag = found[1].lower()
        while k < len(span) and (attr := attrfind_tolerant.match(span, k)):
            k = attr.end()
        closing = span[k:].strip()
        if closing not in (">", "/>"):
            self.data(span)
            return rest.end(), None
        self.start(tag)
        if closing.endswith("/>"):
            self.end(tag)
            return rest.end(), None
        return rest.end(), tag

    def _end_tag(self, i: int) -> int:
        """An end tag (or ``</>`` and bogus ``</…>`` comments, skipped)."""
        text = self._text
        gt = text.find(">", i + 2)
        if gt < 0:
            return -1
        if found := _END_TAG.match(text, i):
            self.end(found[1].lower())
            return found.end()
        if found := tagfind_tolerant.match(text, i + 2):
            self.end(found[1].lower())
        return gt + 1

    def _declaration(self, i: int) -> int:
        """``<!doctype …>``, ``<![CDATA[…]]>`` and other ``<!…>``: skipped."""
        text = self._text
        if text.startswith("<![", i) and (name := _DECL_NAME.match(text, i + 3)):
            if name.end() == len(text):
                return -1
            closer = _MARKED_SECTIONS.get(name[0].strip().lower())
            if closer is not None:
                return self._closed_by(i + 3, closer)
        start = i + 9 if text[i : i + 9].lower() == "<!doctype" else i + 2
        return text.find(">", start) + 1 or -1

    def _closed_by(self, start: int, closer: tuple[str, ...]) -> int:
        """The end of the first ``closer`` at or after ``start``, or -1.

        It walks the ``>``s and looks back from each (a closer cannot hold a ``>``, so the
        first that fits starts first); a search that found nothing is remembered, so a later
        one from further on answers at once.
        """
        text = self._text
        if start >= self._no_close.get(closer, len(text) + 1):
            return -1
        gt = start - 1
        while (gt := text.find(">", gt + 1)) >= 0:
            at = gt
            for piece in reversed(closer):
                while at > start and text[at - 1].isspace():  # \s, as in html.parser
                    at -= 1
                if at - len(piece) < start or not text.startswith(piece, at - len(piece)):
                    break
                at -= len(piece)
            else:
                return gt + 1
        self._no_close[closer] = start
        return -1


def _tag_end(span: str) -> int:
    """html.parser's ``check_for_whole_start_tag`` on a span: where it says the tag ends
    (-1: unfinished), run on the span only, which ends at the tag's ``>``."""
    found = locatestarttagend_tolerant.match(span)
    assert found is not None
    j = found.end()
    following = span[j : j + 1]
    if following == ">":
        return j + 1
    if following == "/":
        return j + 2 if span.startswith("/>", j) else -1
    if following == "" or following in "abcdefghijklmnopqrstuvwxyz=/ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        return -1
    return j if j > 0 else 1
