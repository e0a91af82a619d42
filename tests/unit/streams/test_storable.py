"""The strict JSON loader: it refuses exactly what PostgreSQL or UTF-8 cannot hold."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from streams.contracts import DeadLetter
from streams.storable import MAX_JSON_DEPTH, UnstorableJson, loads, scrub, too_deep, unstorable


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (rb'{"text": "oi\u0000"}', "unsupported_character"),
        (rb'{"te\u0000xt": "oi"}', "unsupported_character"),  # in a key
        (rb'{"text": "oi\ud800"}', "unsupported_character"),  # a lone high surrogate
        (rb'{"text": "oi\uDFFF"}', "unsupported_character"),  # a lone low one, upper case
        (rb'{"text": "\ude00\ud83d"}', "unsupported_character"),  # a pair the wrong way round
        (rb'{"text": "\ud83d\ud83d\ude00"}', "unsupported_character"),  # a high before a pair
        (rb'{"text": "\ud83d x"}', "unsupported_character"),
        (rb'{"text": "\\\ud83d"}', "unsupported_character"),  # an escaped backslash, then it
        (rb'{"text": "\\ud83d\ude00"}', "unsupported_character"),  # "\ud83d" as text, lone low
        (b'{"text": "oi\x00"}', "unsupported_character"),  # a raw NUL byte
        (b'{"text": "oi\xed\xa0\x80"}', "invalid_json"),  # a surrogate's UTF-8 bytes
        (b'{"text": "ol\xe1"}', "invalid_json"),  # Latin-1, not UTF-8
        (b'{"n": NaN}', "invalid_json"),  # jsonb refuses NaN and the infinities
        (b'{"n": -Infinity}', "invalid_json"),
        (b'{"n": 1e999}', "invalid_json"),  # a float that overflows to infinity
        (b'{"text": "oi"', "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "json_too_deep"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "json_too_deep"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "json_too_deep"),
    ],
)
def test_refused(raw: bytes, code: str) -> None:
    with pytest.raises(UnstorableJson) as caught:
        loads(raw)
    assert caught.value.code == code and caught.value.message


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (rb'{"t": "\ud83d\ude00"}', {"t": "\U0001f600"}),  # a pair, as Meta escapes emoji
        (rb'{"t": "\uD83D\uDE00"}', {"t": "\U0001f600"}),
        (rb'{"t": "\\u0000"}', {"t": "\\u0000"}),  # the six characters, not an escape
        (rb'{"t": "\\\\\ud83d\ude00"}', {"t": "\\\\\U0001f600"}),
        (rb'{"t": "\u00e9\ud7ff\ue000\u0001"}', {"t": "\xe9\ud7ff\ue000\x01"}),
        ('{"t": "olá 😀"}'.encode(), {"t": "olá 😀"}),
        (b'\xef\xbb\xbf{"n": 1.5}', {"n": 1.5}),  # a UTF-8 BOM, as json.loads allows
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, None),
        (b'{"t": "' + b"[" * 500 + b'"}', {"t": "[" * 500}),  # brackets in a string
    ],
)
def test_read(raw: bytes, value: Any) -> None:
    got = loads(raw)
    if value is not None:
        assert got == value


def _reference(raw: bytes) -> bool:
    """Storable by the slow, obvious definition: Python reads it, and every string (keys
    too) encodes as UTF-8 without NUL."""
    try:
        value = json.loads(raw, parse_constant=lambda c: float("nan"))
    except ValueError:
        return False
    texts: list[str] = []
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, dict):
            texts += v.keys()
            todo += v.values()
        elif isinstance(v, list):
            todo += v
        elif isinstance(v, float) and v != v:
            return False
    try:
        return all("\x00" not in t and t.encode("utf-8") for t in texts)
    except UnicodeEncodeError:
        return False


PIECES = [
    "a", "u", "0", "d8", "\\\\", "\\n", "\\u0000", "\\u0001", "\\ud83d", "\\uD83D", "\\ude00",
    "\\uDE00", "\\ud800", "\\udbff", "\\udc00", "\\uDFFF", "\\u00e9", "\\ud7ff", "\\ue000", "é",
    "😀", "\\", '\\"',
]  # fmt: skip


def test_agrees_with_the_obvious_definition_on_random_strings() -> None:
    rng = random.Random(13)
    for _ in range(20_000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
        where = rng.choice(["value", "key"])
        raw = (f'{{"k": "{text}"}}' if where == "value" else f'{{"{text}": 1}}').encode()
        expected = _reference(raw)
        try:
            loads(raw)
            got = True
        except UnstorableJson:
            got = False
        assert got == expected, raw


def test_the_check_is_a_few_searches_for_plain_bodies() -> None:
    assert unstorable(b'{"text": "a plain body, no escape at all"}') is None
    assert unstorable(rb'{"url": "https:\/\/x"}') is None  # escapes, none of them \u


def test_too_deep_counts_containers() -> None:
    assert not too_deep({"a": [1, {"b": []}]}, limit=4)
    assert too_deep({"a": [1, {"b": []}]}, limit=3)
    assert not too_deep("just text", limit=0)


def test_scrub_and_dead_letters_hold_anything() -> None:
    assert scrub({"a\x00": ["b\ud800", 1, None]}) == {"a\ufffd": ["b\ufffd", 1, None]}
    dead = DeadLetter(trace_id="t", stage="s", reason="bad \udc00", payload={"t": "x\x00\ud800"})
    assert json.loads(dead.model_dump_json())["payload"] == {"t": "x\ufffd\ufffd"}
