"""The generate stage's logic: one reply from the agent's LLM (or the offline responder).

It never raises for an LLM failure: the conversation must still get an answer, so a
failed call yields the agent's fallback text with outcome "error" and the reason.
Outcomes: "ok" (the LLM answered), "offline" (no LLM configured: extractive answer),
"fallback" (nothing to ask, or the LLM returned an empty answer), "error",
"quota_exceeded" (the workspace's monthly limit was reached: no call was made).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from agents_pipeline.errors import LLMError
from agents_pipeline.llm import (
    OFFLINE_MODEL,
    AgentSpec,
    GenerationResult,
    HistoryTurn,
    LLMClient,
    PromptBuild,
    answer_offline,
    build_messages,
    cited_sources,
    estimate_cost_usd,
    fallback_reply,
)
from agents_pipeline.quota import Permit
from streams.contracts import RetrievedChunk

Admit = Callable[[int], AbstractAsyncContextManager[Permit]]
"""Admission of one LLM call given its worst-case tokens (see agents_pipeline.quota)."""

logger = logging.getLogger(__name__)


def _elapsed_ms(started: float) -> int:
    """Milliseconds since ``started`` (a perf_counter reading)."""
    return round((time.perf_counter() - started) * 1000)


async def generate_reply(
    *,
    agent: AgentSpec,
    user_text: str,
    history: list[HistoryTurn],
    chunks: list[RetrievedChunk],
    llm: LLMClient | None,
    default_model: str,
    admit: Admit | None = None,
    quota_fallback: str | None = None,
) -> GenerationResult:
    """Produce the agent's reply to ``user_text``; every failure still yields something to send.

    With ``admit``, the LLM call happens only inside an admitted permit, which records
    the tokens it took; a refused permit answers with ``quota_fallback`` (the
    workspace's fallback text) and makes no call.
    """
    started = time.perf_counter()
    model = agent.model or default_model
    fallback = fallback_reply(agent.fallback_text, user_text)
    if not user_text.strip():
        # Nothing to answer (a sticker, an uncaptioned image): no call, no cost.
        return GenerationResult(
            reply_text=fallback,
            model=model,
            prompt_tokens=0,
            completion_tokens=0,
            latency_ms=_elapsed_ms(started),
            cost_usd=0.0,
            sources=[],
            outcome="fallback",
        )

    build = build_messages(
        system_prompt=agent.system_prompt,
        history=history,
        user_text=user_text,
        chunks=chunks,
        history_budget_tokens=agent.history_tokens,
    )

    if llm is None:
        offline = answer_offline(
            user_text=user_text, chunks=build.sources, fallback_text=agent.fallback_text
        )
        return GenerationResult(
            reply_text=offline.text,
            model=OFFLINE_MODEL,
            prompt_tokens=offline.prompt_tokens,
            completion_tokens=offline.completion_tokens,
            latency_ms=_elapsed_ms(started),
            cost_usd=0.0,
            sources=[offline.source] if offline.source else [],
            outcome="offline",
        )

    if admit is None:
        return await _call(agent, llm, model, build, fallback, started, permit=None)
    # Worst case for the reservation: our prompt count with a margin for the provider's own.
    worst_case = build.token_estimate + build.token_estimate // 10 + 16 + agent.max_tokens
    async with admit(worst_case) as permit:
        if permit.refused is not None:
            return quota_refusal(permit, model, fallback_reply(quota_fallback, user_text))
        return await _call(agent, llm, model, build, fallback, started, permit=permit)


def quota_refusal(permit: Permit, model: str, reply_text: str) -> GenerationResult:
    """The result for a message past a monthly limit: the fallback text, no call, no cost."""
    return GenerationResult(
        reply_text=reply_text,
        model=model,
        prompt_tokens=0,
        completion_tokens=0,
        latency_ms=0,
        cost_usd=0.0,
        sources=[],
        outcome="quota_exceeded",
        error=f"monthly {permit.refused} limit reached ({permit.used} of {permit.limit})",
    )


async def _call(
    agent: AgentSpec,
    llm: LLMClient,
    model: str,
    build: PromptBuild,
    fallback: str,
    started: float,
    permit: Permit | None,
) -> GenerationResult:
    """One LLM call; its tokens go on the permit, an LLM failure yields the fallback."""
    try:
        completion = await llm.complete(
            model=model,
            messages=build.messages,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
        )
    except LLMError as exc:
        logger.warning("LLM failed for model %s (%s): %s", model, exc.code, exc.message)
        return GenerationResult(
            reply_text=fallback,
            model=model,
            prompt_tokens=0,
            completion_tokens=0,
            latency_ms=_elapsed_ms(started),
            cost_usd=0.0,
            sources=[],
            outcome="error",
            error=f"{exc.code}: {exc.message}" if exc.code else exc.message,
        )

    if permit is not None:
        permit.record(completion.prompt_tokens + completion.completion_tokens)
    text = completion.text.strip()
    cost = estimate_cost_usd(
        completion.model, completion.prompt_tokens, completion.completion_tokens
    )
    return GenerationResult(
        reply_text=text or fallback,
        model=completion.model,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_ms=_elapsed_ms(started),
        cost_usd=cost,
        sources=cited_sources(text, build.sources),
        outcome="ok" if text else "fallback",
    )
