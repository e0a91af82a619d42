"""Markdown inline markup removed in linear time.

Each step does exactly what one regular expression substitution did before (the patterns
are in the docstrings; tests/unit/agents_pipeline/knowledge/test_linear_time.py checks the
two agree on generated text), but none can backtrack: those patterns looked for a closing
delimiter from every opening one, so a line of 20,000 ``[`` or ``**a `` took seconds and a
megabyte took hours, with the GIL held. Here every search for a closing delimiter goes
through a ``_Next``, which never scans a stretch of the text twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["strip_html_comments", "strip_inline"]


class _Next:
    """The next match of a one-character pattern at or after a position.

    Asked for non-decreasing positions (as every step here asks), each character is looked
    at once in total: an answer at or after the position asked is still the answer.
    """

    __slots__ = ("_asked", "_found", "_search", "_text")

    def __init__(self, text: str, chars: str) -> None:
        self._text = text
        self._search = re.compile(f"[{re.escape(chars)}]").search
        self._asked = -1
        self._found = -1

    def __call__(self, pos: int) -> int:
        """Index of the next match at or after ``pos``, or ``len(text)`` when there is none."""
        if self._asked <= pos <= self._found:
            return self._found
        self._asked = pos
        match = self._search(self._text, pos)
        self._found = match.start() if match else len(self._text)
        return self._found


def _is_word(char: str) -> bool:
    """``\\w`` of a str pattern: Unicode letters and digits, and the underscore."""
    return char.isalnum() or char == "_"


def _code_spans(text: str) -> str:
    """``re.sub(r"`+([^`]+?)`+", r"\\1", text)``."""
    out: list[str] = []
    kept = i = 0
    n = len(text)
    while (start := text.find("`", i)) >= 0:
        content = start
        while content < n and text[content] == "`":
            content += 1
        close = text.find("`", content) if content < n else -1
        if close < 0:  # nothing after this run can close a span either
            break
        end = close
        while end < n and text[end] == "`":
            end += 1
        out += (text[kept:start], text[content:close])
        kept = i = end
    out.append(text[kept:])
    return "".join(out)


def _images(text: str) -> str:
    """``re.sub(r"!\\[([^\\]]*)\\]\\([^)]*\\)", r"\\1", text)``."""
    out: list[str] = []
    kept = i = 0
    n = len(text)
    bracket, paren = _Next(text, "]"), _Next(text, ")")
    while (start := text.find("![", i)) >= 0:
        close = bracket(start + 2)
        if close >= n:
            break
        if close + 1 < n and text[close + 1] == "(":
            end = paren(close + 2)
            if end >= n:
                break
            out += (text[kept:start], text[start + 2 : close])
            kept = i = end + 1
        else:
            i = start + 1
    out.append(text[kept:])
    return "".join(out)


def _link_text(label: str, url: str) -> str:
    """A link as text: the label, and the address unless it is an anchor or the label."""
    return label if url.startswith("#") or url == label else f"{label} ({url})"


def _links(text: str) -> str:
    """``re.sub(r"\\[([^\\]]+)\\]\\(([^)\\s]+)(?:[ \\t]+\\"[^\\"]*\\")?\\)", _link_text, text)``."""
    out: list[str] = []
    kept = i = 0
    n = len(text)
    bracket, url_end, quote = _Next(text, "]"), _Next(text, ")" + _SPACE_CHARS), _Next(text, '"')
    tails: dict[int, tuple[int, str] | None] = {}  # what follows a "]": (match end, url)

    def tail(close: int) -> tuple[int, str] | None:
        if close in tails:
            return tails[close]
        found: tuple[int, str] | None = None
        if close + 1 < n and text[close + 1] == "(":
            url_start = close + 2
            stop = url_end(url_start)
            if url_start < stop < n:
                url = text[url_start:stop]
                if text[stop] == ")":
                    found = (stop + 1, url)
                elif text[stop] in " \t":
                    title = stop
                    while title < n and text[title] in " \t":
                        title += 1
                    if title < n and text[title] == '"':
                        title_end = quote(title + 1)
                        if title_end + 1 < n and text[title_end + 1] == ")":
                            found = (title_end + 2, url)
        tails.clear()  # closes are asked in order: only the last one can come again
        tails[close] = found
        return found

    while (start := text.find("[", i)) >= 0:
        close = bracket(start + 1)
        if close >= n:
            break
        found = tail(close) if close > start + 1 else None
        if found is None:
            i = start + 1
            continue
        end, url = found
        out += (text[kept:start], _link_text(text[start + 1 : close], url))
        kept = i = end
    out.append(text[kept:])
    return "".join(out)


def _reference_links(text: str) -> str:
    """``re.sub(r"\\[([^\\]]+)\\]\\[[^\\]]*\\]", r"\\1", text)``."""
    out: list[str] = []
    kept = i = 0
    n = len(text)
    bracket = _Next(text, "]")
    while (start := text.find("[", i)) >= 0:
        close = bracket(start + 1)
        if close >= n:
            break
        if close > start + 1 and close + 1 < n and text[close + 1] == "[":
            end = bracket(close + 2)
            if end >= n:
                break
            out += (text[kept:start], text[start + 1 : close])
            kept = i = end + 1
        else:
            i = start + 1
    out.append(text[kept:])
    return "".join(out)


_AUTOLINK_SCHEMES = ("http://", "https://", "mailto:")
# Python's str.isspace() and the re module's \s agree: this is every character of either.
_SPACE_CHARS = "".join(c for c in map(chr, range(0x3000 + 1)) if c.isspace())


def _autolinks(text: str) -> str:
    """``re.sub(r"<((?:https?://|mailto:)[^>\\s]+)>", r"\\1", text)``."""
    out: list[str] = []
    kept = i = 0
    n = len(text)
    stop_at = _Next(text, ">" + _SPACE_CHARS)
    while (start := text.find("<", i)) >= 0:
        scheme = next((s for s in _AUTOLINK_SCHEMES if text.startswith(s, start + 1)), None)
        if scheme is not None:
            body = start + 1 + len(scheme)
            stop = stop_at(body)
            if body < stop < n and text[stop] == ">":
                out += (text[kept:start], text[start + 1 : stop])
                kept = i = stop + 1
                continue
        i = start + 1
    out.append(text[kept:])
    return "".join(out)


def _paired(*delimiters: str) -> Callable[[str], str]:
    """``re.sub(rf"({a}|{b})(?=\\S)(.+?)(?<=\\S)\\1", r"\\2", text)`` for two-character delimiters.

    One pass for all of them, as the one pattern did: "**a __b** c__" keeps its "__".
    """
    opener = re.compile("|".join(re.escape(d) for d in delimiters))

    def step(text: str) -> str:
        out: list[str] = []
        kept = i = 0
        n = len(text)
        newline = _Next(text, "\n")
        # Per delimiter, its first closing candidate at or after ``scan``: every candidate
        # is looked at once, left to right.
        scans = dict.fromkeys(delimiters, 0)
        closers = dict.fromkeys(delimiters, -1)
        while (found := opener.search(text, i)) is not None:
            start, delimiter = found.start(), found[0]
            inner = start + 2
            if inner >= n or text[inner].isspace():
                i = start + 1
                continue
            first = inner + 1
            closer = closers[delimiter]
            if closer < first:
                scan = max(scans[delimiter], first)
                closer = n
                while (at := text.find(delimiter, scan)) >= 0:
                    scan = at + 1
                    if not text[at - 1].isspace():
                        closer = at
                        break
                scans[delimiter], closers[delimiter] = scan, closer
            if closer >= n or closer > newline(inner):  # "." does not match a line break
                i = start + 1
                continue
            out += (text[kept:start], text[inner:closer])
            kept = i = closer + 2
        out.append(text[kept:])
        return "".join(out)

    return step


def _emphasis(mark: str) -> Callable[[str], str]:
    """``re.sub(rf"(?<![\\w{m}]){m}(?=\\S)(.+?)(?<=\\S){m}(?![\\w{m}])", r"\\1", text)``."""

    def opens(text: str, at: int) -> bool:
        before = text[at - 1] if at else ""
        return not (before and (_is_word(before) or before == mark))

    def step(text: str) -> str:
        out: list[str] = []
        kept = i = 0
        n = len(text)
        newline = _Next(text, "\n")

        def closes(at: int) -> bool:
            after = text[at + 1] if at + 1 < n else ""
            if text[at - 1].isspace():
                return False
            return not (after and (_is_word(after) or after == mark))

        scan = 0
        closer = -1
        while (start := text.find(mark, i)) >= 0:
            inner = start + 1
            if not opens(text, start) or inner >= n or text[inner].isspace():
                i = start + 1
                continue
            first = inner + 1
            if closer < first:
                scan = max(scan, first)
                closer = -1
                while (at := text.find(mark, scan)) >= 0:
                    scan = at + 1
                    if closes(at):
                        closer = at
                        break
                if closer < 0:
                    closer = n
            if closer >= n:
                break
            if closer > newline(inner):
                i = start + 1
                continue
            out += (text[kept:start], text[inner:closer])
            kept = i = closer + 1
        out.append(text[kept:])
        return "".join(out)

    return step


_TAG_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def _html_tags(text: str) -> str:
    """``re.sub(r"</?[A-Za-z][A-Za-z0-9-]*(?:\\s[^<>]*)?/?>", " ", text)``."""
    out: list[str] = []
    kept = i = 0
    n = len(text)
    angle = _Next(text, "<>")
    while (start := text.find("<", i)) >= 0:
        name = start + 2 if text.startswith("/", start + 1) else start + 1
        end = -1
        if name < n and text[name].isascii() and text[name].isalpha():
            after = name + 1
            while after < n and text[after] in _TAG_NAME_CHARS:
                after += 1
            if after < n and text[after].isspace():
                stop = angle(after + 1)
                if stop < n and text[stop] == ">":
                    end = stop + 1
            elif text.startswith(">", after):
                end = after + 1
            elif text.startswith("/>", after):
                end = after + 2
        if end < 0:
            i = start + 1
            continue
        out += (text[kept:start], " ")
        kept = i = end
    out.append(text[kept:])
    return "".join(out)


_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")  # one character each: linear


def _escapes(text: str) -> str:
    """Backslash escapes: the character without its backslash."""
    return _ESCAPE.sub(r"\1", text)


_STEPS: tuple[Callable[[str], str], ...] = (
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
)


def strip_inline(text: str) -> str:
    """Inline markup lightly removed; a link keeps its address for the agent to share."""
    for step in _STEPS:
        text = step(text)
    return text


def strip_html_comments(text: str) -> str:
    """``re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)``: an unclosed ``<!--`` stays."""
    out: list[str] = []
    kept = 0
    while (start := text.find("<!--", kept)) >= 0:
        end = text.find("-->", start + 4)
        if end < 0:  # no later "<!--" can be closed either
            break
        out.append(text[kept:start])
        kept = end + 3
    out.append(text[kept:])
    return "".join(out)
