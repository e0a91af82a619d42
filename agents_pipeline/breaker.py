"""Per-channel guards of the send stage: a circuit breaker and a bound on calls in flight.

A channel whose provider fails or hangs must cost the other channels nothing. The breaker
stops calling a channel after ``failures`` consecutive failed calls (timeouts, connection
errors, 429, 5xx) and for as long as a provider's Retry-After asks; while it is open the
channel's messages are deferred without a call. After ``cooldown`` seconds it half-opens:
one call (the probe) goes out, and its result closes or reopens it. The slots bound the
calls one channel has in flight in this worker, so that a hanging provider holds at most
that many of them (and the batches they belong to); a message waits for a slot while the
channel's calls keep finishing, and is deferred when they stop.

Both live in one worker's memory: each worker judges a channel by its own calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Whether a call may go out now; if not, in how many seconds to try again."""

    admit: bool
    probe: bool = False  # the one call of a half-open breaker: report its result
    retry_in: float = 0.0


@dataclass
class _State:
    consecutive: int = 0
    open_until: float = 0.0  # 0: closed
    probing: bool = False
    probe_started: float = 0.0


class ChannelBreakers:
    """One circuit breaker per channel."""

    def __init__(
        self,
        failures: int,
        cooldown: float,
        *,
        probe_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = max(1, failures)
        self.cooldown = cooldown
        self.probe_timeout = probe_timeout  # a probe that never reported frees its place
        self.clock = clock
        self._states: dict[Hashable, _State] = {}

    def admit(self, channel: Hashable) -> Verdict:
        """Decide a call: closed admits, open defers, half-open admits one probe at a time."""
        st = self._states.get(channel)
        if st is None or st.open_until == 0.0:
            return Verdict(True)
        now = self.clock()
        if now < st.open_until:
            return Verdict(False, retry_in=st.open_until - now)
        if st.probing and now - st.probe_started < self.probe_timeout:
            return Verdict(False, retry_in=min(self.cooldown, 2.0))
        st.probing, st.probe_started = True, now
        return Verdict(True, probe=True)

    def succeeded(self, channel: Hashable) -> None:
        """The provider answered (even a refusal of the message): the channel works."""
        self._states.pop(channel, None)

    def failed(self, channel: Hashable, *, probe: bool, pause: float | None = None) -> bool:
        """A call failed in a way a later call may not (``pause``: a Retry-After to honour
        for the whole channel). Returns whether the breaker is open now."""
        st = self._states.setdefault(channel, _State())
        st.consecutive += 1
        now = self.clock()
        wait = 0.0
        if probe or st.consecutive >= self.failures:
            wait = self.cooldown
        if pause is not None:
            wait = max(wait, pause)
        if probe:
            st.probing = False
        if wait > 0:
            st.open_until = max(st.open_until, now + wait)
            return True
        return st.open_until > now

    def release(self, channel: Hashable, *, probe: bool) -> None:
        """A call ended with no verdict on the channel (a bug, a refused destination)."""
        st = self._states.get(channel)
        if probe and st is not None:
            st.probing = False

    def retry_in(self, channel: Hashable) -> float:
        """Seconds until the channel half-opens (0 when it is not open)."""
        st = self._states.get(channel)
        return max(0.0, st.open_until - self.clock()) if st is not None else 0.0


class ChannelSlots:
    """At most ``limit`` calls in flight per channel. A message waits for a slot while the
    channel's calls keep finishing (a busy, healthy channel), and gives up when none has
    started or finished for ``stall`` seconds (a channel whose calls hang)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._slots: dict[Hashable, asyncio.Semaphore] = {}
        self._moved: dict[Hashable, float] = {}  # when a call of the channel last began or ended

    async def acquire(self, channel: Hashable, wait: float, stall: float | None = None) -> bool:
        """Take a slot within ``wait`` seconds; False if none came free in time, or if the
        channel's calls made no progress for ``stall`` seconds (default: ``wait``)."""
        loop = asyncio.get_running_loop()
        sem = self._slots.setdefault(channel, asyncio.Semaphore(self.limit))
        stall = wait if stall is None else stall
        end = loop.time() + max(0.0, wait)
        while sem.locked():
            left = end - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(sem.acquire(), timeout=min(left, max(stall, 0.01)))
            except TimeoutError:
                if loop.time() - self._moved.get(channel, 0.0) >= stall:
                    return False
                continue
            self._moved[channel] = loop.time()
            return True
        await sem.acquire()
        self._moved[channel] = loop.time()
        return True

    def release(self, channel: Hashable) -> None:
        """Give a slot back (a call ended: the channel moves)."""
        self._moved[channel] = asyncio.get_running_loop().time()
        self._slots[channel].release()
