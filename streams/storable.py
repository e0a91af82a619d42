"""JSON every part can hold: one strict loader for the edges, and a scrub for dead letters.

Python's ``json`` reads text that the rest of the pipeline cannot hold:

- ``\\u0000`` (NUL): PostgreSQL refuses it in ``text`` and in ``jsonb``;
- a lone UTF-16 surrogate (``\\ud800`` without its pair, or its UTF-8 bytes): ``jsonb``
  refuses it, UTF-8 cannot encode it, so a contract holding one cannot even be produced;
- ``NaN``, ``Infinity`` and numbers that overflow to them: ``jsonb`` refuses them;
- nesting deep enough to exhaust the parser's recursion (a 500 before this module).

One such value in a batch made the batch's one multi-row statement fail for every
record in it. ``loads`` refuses them all, so the gateway answers 400 and normalize
dead-letters the one record; the check is a few substring searches over the bytes on
the common path (``unstorable``), and exact work only when one of them finds something.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import Any

MAX_JSON_DEPTH = 64  # nested objects and arrays; providers' webhooks nest about 8 deep

# A surrogate pair escaped as JSON writes it (group 1 unset), or the escape of NUL or of a
# surrogate on its own (group 1), in either case.
_SUSPECT = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})"
)
# The same, without the pairs: what ``_SUSPECT`` would report when no backslash is escaped.
_LONE = re.compile(
    rb"\\u(?:0000"
    rb"|[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u)[dD][c-fC-F][0-9a-fA-F]{2})"
)
_BACKSLASH = 0x5C
_UNHOLDABLE = re.compile("[\x00\ud800-\udfff]")  # in a str: NUL or a lone surrogate


class UnstorableJson(ValueError):
    """A body we refuse, with the API's error code (``invalid_json``,
    ``unsupported_character`` or ``json_too_deep``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _escaped(raw: bytes, at: int) -> bool:
    """Whether the backslash at ``at`` is itself escaped (an odd run of backslashes before it):
    then ``\\u0000`` is the six characters of a string, not an escape."""
    run = 0
    i = at - 1
    while i >= 0 and raw[i] == _BACKSLASH:
        run += 1
        i -= 1
    return run % 2 == 1


def _bad_escape(raw: bytes) -> str | None:
    """The first ``\\u0000`` or unpaired surrogate escape in JSON text, or None."""
    for m in _SUSPECT.finditer(raw):
        lone = m.group(1)
        if lone is None:  # a pair: harmless, unless its first backslash is escaped
            if _escaped(raw, m.start()):
                return f"a lone UTF-16 surrogate (\\u{m.group()[8:].lower().decode()})"
            continue
        if _escaped(raw, m.start()):
            continue  # the six characters of a string, not an escape
        if lone == b"0000":
            return "a NUL character (\\u0000)"
        return f"a lone UTF-16 surrogate (\\u{lone.lower().decode()})"
    return None


def unstorable(raw: bytes) -> str | None:
    """What in ``raw`` (JSON text) PostgreSQL or UTF-8 cannot hold, or None.

    NUL bytes, and ``\\u0000`` or lone surrogate escapes outside escaped backslashes.
    Encoded surrogates are not UTF-8 and fail ``loads``' strict decoding. O(n): substring
    searches first, the exact scan only when one finds a candidate.
    """
    if b"\x00" in raw:
        return "a NUL byte"
    if b"\\" not in raw:  # one memchr: no escape at all, as in most bodies
        return None
    # ``_LONE`` skips pairs in C and is exact unless a backslash before a "u" is itself
    # escaped; the walk that counts backslashes runs only then, or to confirm a find.
    if _LONE.search(raw) is None and b"\\\\u" not in raw:
        return None
    return _bad_escape(raw)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether decoded JSON nests more than ``limit`` objects and arrays (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if not isinstance(v, dict | list):
            continue
        if depth > limit:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def loads(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode UTF-8 JSON that every stage can store, or raise ``UnstorableJson``."""
    found = unstorable(raw)
    if found is not None:
        raise UnstorableJson(
            "unsupported_character", f"the body holds {found}, which cannot be stored"
        )
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        value = _DECODER.decode(raw.decode("utf-8"))
    except RecursionError:
        raise UnstorableJson("json_too_deep", _deep_message(max_depth)) from None
    except UnicodeDecodeError as exc:
        raise UnstorableJson("invalid_json", f"body is not valid UTF-8: {exc}") from None
    except ValueError as exc:
        raise UnstorableJson("invalid_json", f"body is not valid JSON: {exc}") from None
    # Depth is at most the number of brackets: most bodies never need the walk.
    if raw.count(b"{") + raw.count(b"[") > max_depth and too_deep(value, max_depth):
        raise UnstorableJson("json_too_deep", _deep_message(max_depth))
    return value


def _deep_message(limit: int) -> str:
    return f"the body nests objects and arrays more than {limit} levels deep"


def scrub(value: Any) -> Any:
    """``value`` with every NUL and lone surrogate in its strings (keys too) replaced by
    U+FFFD: for what must be written whatever it holds (a dead letter's payload)."""
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _scrub_text(text: str) -> str:
    return _UNHOLDABLE.sub("\ufffd", text)
