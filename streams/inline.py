"""Run a coroutine's first step inline, and hand over the rest only when it has to wait.

faust's consumer delivers each record with ``wait_first(callback(record),
suspend_flow.wait())``: four tasks, an ``asyncio.wait`` and three cancellations per
record, so that a delivery blocked on a full buffer gives way when the flow is
suspended (a rebalance). Almost every delivery never blocks: it finishes in its
first step. ``start`` runs that step in place; a coroutine that does block comes
back as an awaitable of the rest, which the caller races against the suspension
exactly as before.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class Rest:
    """The rest of a coroutine started by ``start``: awaiting it waits for the future it
    blocked on, then drives the coroutine to its end (cancellation is passed in)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], blocked_on: Any) -> None:
        self._coro = coro
        self._blocked_on = blocked_on

    def __await__(self) -> Generator[Any, Any, Any]:
        pending = self._blocked_on
        while True:
            try:
                yield pending  # the task running us waits on it, as it would for the coroutine
            except BaseException as exc:  # cancelled, or thrown in: the coroutine sees it
                try:
                    pending = self._coro.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                pending = self._coro.send(None)
            except StopIteration as done:
                return done.value


def start(coro: Coroutine[Any, Any, Any]) -> Rest | None:
    """Run ``coro`` up to its first wait: None when it finished there, else the rest.
    An exception it raises in that step propagates."""
    try:
        blocked_on = coro.send(None)
    except StopIteration:
        return None
    return Rest(coro, blocked_on)
