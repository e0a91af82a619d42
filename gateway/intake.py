"""Intake and the drain: how a stopping gateway lets the pipeline finish what it accepted.

Routes that put work on the broker (``Route.produces``) pass the ``Intake``. On SIGTERM or
Ctrl-C (``gateway/serve.py``) the drain closes it (those routes answer 503 with Retry-After;
reads and other writes go on), waits for the requests inside it, for every accepted record to
be on the broker, and then for the pipeline to carry everything to its end (a wave,
streams/progress.py), bounded by ``OMNICHAT_DRAIN_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gateway.outbox import Drained

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger(__name__)


class Intake:
    """Open while the gateway takes new work; counts the producing requests inside."""

    def __init__(self) -> None:
        self.open = True
        self.active = 0

    def enter(self) -> bool:
        """Let a producing request in (False: closed, answer 503)."""
        if not self.open:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        """A producing request is answered."""
        self.active -= 1

    async def quiet(self, timeout: float) -> bool:
        """Wait until no producing request is inside."""
        deadline = time.monotonic() + timeout
        while self.active:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


async def drain(svc: Services, timeout: float) -> Drained:
    """Close intake, then let the pipeline carry everything to its end (at most ``timeout``)."""
    started = time.monotonic()

    def left() -> float:
        return max(0.0, timeout - (time.monotonic() - started))

    svc.intake.open = False
    log.info("intake stopped: new webhooks and producing API calls get 503 + Retry-After")
    await svc.intake.quiet(min(left(), svc.settings.produce_timeout_seconds * 2))
    # Our own records reach the broker even with no time to drain: the journal is durable,
    # but a broker that is not restarted should not wait for a replay.
    await svc.outbox.settle(max(left(), svc.settings.produce_timeout_seconds))
    if timeout <= 0:
        done = Drained(False, 0, -1, time.monotonic() - started)
    else:
        done = await svc.outbox.carry(left())
    where = (
        "they are in the journal and will be replayed"
        if svc.outbox.journal_on
        else "they stay on the broker"
    )
    if done.complete:
        log.info("drained %d records in %.1f s", done.handled, time.monotonic() - started)
    elif timeout <= 0:
        log.info("no drain (OMNICHAT_DRAIN_TIMEOUT_SECONDS=0): what is in flight stays (%s)", where)
    else:
        count = "an unknown number of" if done.left < 0 else str(done.left)
        log.warning("drain timed out with %s records left (%s)", count, where)
    return done
