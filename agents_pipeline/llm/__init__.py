"""The LLM layer of the generate stage: prompts, the client, the offline responder, pricing.

Nothing here knows about Kafka or the database; the stage passes plain values in and
gets a GenerationResult back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agents_pipeline.llm.client import Completion, LLMClient, parse_retry_after
from agents_pipeline.llm.offline import (
    DEFAULT_FALLBACK,
    OfflineAnswer,
    answer_offline,
    fallback_reply,
    guess_language,
)
from agents_pipeline.llm.pricing import OFFLINE_MODEL, ModelPrice, estimate_cost_usd, price_for
from agents_pipeline.llm.prompt import (
    HistoryTurn,
    PromptBuild,
    build_messages,
    cited_numbers,
    cited_sources,
)
from agents_pipeline.llm.tokens import count_message_tokens, count_tokens, truncate_to_tokens
from streams.contracts import RetrievedChunk

Outcome = Literal["ok", "offline", "fallback", "error", "quota_exceeded"]


class AgentSpec(BaseModel):
    """The settings of one agent version that shape a reply."""

    system_prompt: str
    model: str | None = Field(default=None, description="None: the deployment's default model.")
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, gt=0)
    history_tokens: int = Field(default=1000, ge=0, description="Budget for earlier turns.")
    fallback_text: str | None = Field(
        default=None, description="Said when no answer can be given; None: a default."
    )


class GenerationResult(BaseModel):
    """The reply to send and what producing it took, for the run record and usage."""

    reply_text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    cost_usd: float
    sources: list[RetrievedChunk] = Field(description="The sources the reply cites.")
    outcome: Outcome
    error: str | None = None


__all__ = [
    "DEFAULT_FALLBACK",
    "OFFLINE_MODEL",
    "AgentSpec",
    "Completion",
    "GenerationResult",
    "HistoryTurn",
    "LLMClient",
    "ModelPrice",
    "OfflineAnswer",
    "Outcome",
    "PromptBuild",
    "answer_offline",
    "build_messages",
    "cited_numbers",
    "cited_sources",
    "count_message_tokens",
    "count_tokens",
    "estimate_cost_usd",
    "fallback_reply",
    "guess_language",
    "parse_retry_after",
    "price_for",
    "truncate_to_tokens",
]
