"""Monthly quotas: admit an LLM call only while the workspace is under its plan's limits.

The generate stage owns each workspace's counters (``messages.retrieved`` is
partitioned by workspace, see docs/ARCHITECTURE.md), so one process decides for a
workspace and the decision can be exact:

- **LLM tokens.** A call is admitted while the month's tokens are under the limit.
  Calls of one workspace run concurrently (many conversations), so each admitted
  call reserves its worst case (prompt estimate + ``max_tokens``); a call whose
  worst case does not fit beside the calls in flight waits for them to finish and
  then looks again. Hence the calls made are exactly those a one-at-a-time run
  would make: the last one may cross the limit, none starts after it was reached.
- **Inbound messages.** Generate counts the messages that reach the agent, in their
  order; the message whose number in the month is past the limit gets no LLM call.
  Messages that stop at resolve (human mode, no agent bound) need no call and do not
  count here (``usage_records`` counts every inbound message). The usage table cannot
  decide this: resolve runs ahead of generate, so its count already includes messages
  generate has not reached.

Over a limit the caller answers with the workspace's fallback text. Nothing here
knows Faust: counters are a small protocol that the stream backs with a table.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

INBOUND = "inbound_messages"
TOKENS = "llm_tokens"
INBOUND_SEEN = "inbound_answered"  # messages that reached the agent (generate's own count)
METRICS = (INBOUND, TOKENS)


@dataclass(frozen=True)
class Limits:
    """A workspace's monthly limits (None: unlimited)."""

    inbound_messages: int | None = None
    llm_tokens: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, int | None]) -> Limits:
        """From ``storage.quotas.monthly_limits``."""
        return cls(inbound_messages=row.get(INBOUND), llm_tokens=row.get(TOKENS))


UNLIMITED = Limits()


def month_of(at: datetime) -> str:
    """The quota period of a moment: its UTC month, ``YYYY-MM``."""
    return at.strftime("%Y-%m")


def counter_key(workspace_id: UUID, month: str, metric: str) -> str:
    """Key of a month's counter (the same shape as the usage table's day keys)."""
    return f"{workspace_id}:{month}:{metric}"


class Counters(Protocol):
    """Where the month's totals live (a Faust table in the worker, a dict in tests)."""

    def get(self, key: str) -> int:
        """The total, 0 when never counted."""
        ...

    def add(self, key: str, amount: int) -> None:
        """Add to the total."""
        ...


@dataclass
class Permit:
    """The answer to "may this message call the LLM?"; ``refused`` names the limit hit."""

    refused: str | None = None
    used: int = 0
    limit: int | None = None
    tokens: int = 0

    def record(self, tokens: int) -> None:
        """The tokens the call actually took (prompt + completion)."""
        self.tokens = max(0, tokens)


@dataclass
class _Flight:
    """Calls of one workspace in flight and the tokens they reserved."""

    calls: int = 0
    reserved: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class QuotaGate:
    """Admission of LLM calls per workspace against its monthly limits (see module doc)."""

    REMEMBERED = 100_000  # inbound decisions kept for retries (a few MB)

    def __init__(self, counters: Counters) -> None:
        """``counters``: the month's tokens and answered messages per workspace."""
        self._tokens = counters
        self._flights: dict[UUID, _Flight] = {}
        self._decided: OrderedDict[UUID, Permit | None] = OrderedDict()

    def inbound_refusal(
        self, workspace_id: UUID, limits: Limits, month: str, message_id: UUID | None = None
    ) -> Permit | None:
        """Count one message reaching the agent; a refusal when the month is past the limit.

        A stage retried after a transient error asks again for the same ``message_id``:
        it gets the first answer and is not counted twice (a replayed message that
        already has its run never gets here at all).
        """
        if message_id is not None and message_id in self._decided:
            return self._decided[message_id]
        decision = self._inbound_decision(workspace_id, limits, month)
        if message_id is not None:
            self._decided[message_id] = decision
            while len(self._decided) > self.REMEMBERED:
                self._decided.popitem(last=False)
        return decision

    def _inbound_decision(self, workspace_id: UUID, limits: Limits, month: str) -> Permit | None:
        seen_key = counter_key(workspace_id, month, INBOUND_SEEN)
        self._tokens.add(seen_key, 1)
        limit = limits.inbound_messages
        if limit is None:
            return None
        used = self._tokens.get(seen_key)
        if used > limit:
            return Permit(refused=INBOUND, used=used, limit=limit)
        return None

    def tokens_used(self, workspace_id: UUID, month: str) -> int:
        """The month's LLM tokens so far (finished calls)."""
        return self._tokens.get(counter_key(workspace_id, month, TOKENS))

    @asynccontextmanager
    async def llm_call(
        self, workspace_id: UUID, limits: Limits, month: str, worst_case: int
    ) -> AsyncIterator[Permit]:
        """Admit one call or refuse it (token limit); on exit the permit's tokens are counted.

        ``worst_case`` is the most tokens the call can take (prompt estimate plus
        ``max_tokens``); it only decides whether the call may overlap others.
        """
        limit = limits.llm_tokens
        if limit is None:
            permit = Permit()
            try:
                yield permit
            finally:
                self._count(workspace_id, month, permit.tokens)
            return
        flight = self._flights.setdefault(workspace_id, _Flight())
        async with flight.changed:
            while True:
                used = self.tokens_used(workspace_id, month)
                if used >= limit:
                    break
                if flight.calls == 0 or used + flight.reserved + worst_case <= limit:
                    flight.calls += 1
                    flight.reserved += worst_case
                    break
                await flight.changed.wait()
        if used >= limit:
            yield Permit(refused=TOKENS, used=used, limit=limit)
            return
        permit = Permit(used=used, limit=limit)
        try:
            yield permit
        finally:
            self._count(workspace_id, month, permit.tokens)
            async with flight.changed:
                flight.calls -= 1
                flight.reserved -= worst_case
                flight.changed.notify_all()

    def _count(self, workspace_id: UUID, month: str, tokens: int) -> None:
        if tokens:
            self._tokens.add(counter_key(workspace_id, month, TOKENS), tokens)
