"""Chat prompt assembly: system prompt + numbered sources, trimmed history, the user's message."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from agents_pipeline.llm.tokens import (
    TOKENS_PER_MESSAGE,
    count_message_tokens,
    count_tokens,
    truncate_to_tokens,
)
from streams.contracts import RetrievedChunk

DEFAULT_CONTEXT_BUDGET_TOKENS = 1500
# A source cut below this many tokens of text says too little to be worth a number.
MIN_SOURCE_TEXT_TOKENS = 24
MAX_TITLE_TOKENS = 32
SOURCE_SEPARATOR = "\n\n"

ANSWER_RULES = (
    "Answer in the same language as the user's latest message "
    "(in Brazilian Portuguese when the user writes in Portuguese). "
    "Be brief and clear: this is a WhatsApp chat."
)
SOURCES_RULES = (
    "Use the numbered sources below to answer. Cite each fact you take from a source "
    "with its number in square brackets, like [1] or [2]. If the sources do not contain "
    "the answer, say that you do not know; never invent information."
)
NO_SOURCES_RULES = (
    "No sources were found for this message. If answering needs information about the "
    "business that you do not have, say that you do not know; never invent information."
)

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


class HistoryTurn(BaseModel):
    """One earlier message of the conversation, as the model should see it."""

    role: Literal["user", "assistant"]
    text: str


class PromptBuild(BaseModel):
    """The messages to send and what went into them, for accounting and citations."""

    messages: list[dict[str, str]]
    token_estimate: int = Field(description="Estimated prompt tokens (tiktoken, chat overhead).")
    sources: list[RetrievedChunk] = Field(description="Sources included, sources[n-1] is [n].")
    history_turns_kept: int


def _allocate(costs: list[int], budget: int) -> list[int]:
    """Max-min fair split of ``budget``: short entries get all they need, long ones share."""
    alloc = [0] * len(costs)
    remaining = max(budget, 0)
    pending = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    while pending:
        share = remaining // len(pending)
        smallest = pending[0]
        if costs[smallest] > share:
            for i in pending:
                alloc[i] = share
            break
        alloc[smallest] = costs[smallest]
        remaining -= costs[smallest]
        pending.pop(0)
    return alloc


def _source_entries(chunks: list[RetrievedChunk], budget: int) -> list[tuple[RetrievedChunk, str]]:
    """Numbered source entries fitting ``budget``; the lowest-ranked are dropped first."""
    candidates = [c for c in chunks if c.text.strip()]
    while candidates:
        headers = [
            f"[{n}] {truncate_to_tokens(c.document_title.strip(), MAX_TITLE_TOKENS)}\n"
            for n, c in enumerate(candidates, start=1)
        ]
        header_costs = [count_tokens(h) + 1 for h in headers]  # +1: the separator
        text_costs = [count_tokens(c.text.strip()) for c in candidates]
        text_budget = budget - sum(header_costs)
        alloc = _allocate(text_costs, text_budget)
        if all(
            a >= min(cost, MIN_SOURCE_TEXT_TOKENS)
            for a, cost in zip(alloc, text_costs, strict=True)
        ):
            return [
                (c, header + truncate_to_tokens(c.text.strip(), a))
                for header, c, a in zip(headers, candidates, alloc, strict=True)
            ]
        candidates.pop()
    return []


def _trim_history(history: list[HistoryTurn], budget: int) -> list[HistoryTurn]:
    """The newest contiguous turns whose messages fit ``budget`` tokens."""
    kept: list[HistoryTurn] = []
    used = 0
    for turn in reversed(history):
        if not turn.text.strip():
            continue
        cost = TOKENS_PER_MESSAGE + count_tokens(turn.role) + count_tokens(turn.text)
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    return kept


def build_messages(
    *,
    system_prompt: str,
    history: list[HistoryTurn],
    user_text: str,
    chunks: list[RetrievedChunk],
    history_budget_tokens: int,
    context_budget_tokens: int = DEFAULT_CONTEXT_BUDGET_TOKENS,
) -> PromptBuild:
    """Assemble the chat messages so the prompt stays within the agent's token budgets."""
    entries = _source_entries(chunks, context_budget_tokens)
    parts = [system_prompt.strip(), ANSWER_RULES]
    if entries:
        block = SOURCE_SEPARATOR.join(entry for _, entry in entries)
        parts.append(f"{SOURCES_RULES}\n\nSources:\n\n{block}")
    else:
        parts.append(NO_SOURCES_RULES)
    system = "\n\n".join(p for p in parts if p)

    kept = _trim_history(history, history_budget_tokens)
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": t.text} for t in kept]
    messages.append({"role": "user", "content": user_text})
    return PromptBuild(
        messages=messages,
        token_estimate=count_message_tokens(messages),
        sources=[chunk for chunk, _ in entries],
        history_turns_kept=len(kept),
    )


def cited_numbers(text: str) -> list[int]:
    """Source numbers cited as [n] (or [n, m]) in ``text``, in order of first citation."""
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        for number in match.group(1).split(","):
            n = int(number)
            if n not in seen:
                seen.append(n)
    return seen


def cited_sources(text: str, sources: list[RetrievedChunk]) -> list[RetrievedChunk]:
    """The sources an answer actually cites; numbers outside the prompt's range are ignored."""
    return [sources[n - 1] for n in cited_numbers(text) if 1 <= n <= len(sources)]
