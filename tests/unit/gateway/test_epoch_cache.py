"""When a cached auth row may be trusted: its epoch, its age, and Redis away."""

from __future__ import annotations

import time

from gateway.auth_epoch import EpochCache


def test_an_entry_holds_only_under_its_epoch() -> None:
    cache: EpochCache[str, int] = EpochCache(ttl=60.0, unverified_ttl=0.5)
    cache.put("k", b"e1", 1, time.monotonic())
    assert cache.get("k", b"e1") == (True, 1)
    assert cache.get("k", b"e2") == (False, None), "a bump anywhere: load it again"
    assert cache.get("other", b"e1") == (False, None)


def test_age_bounds_every_entry() -> None:
    cache: EpochCache[str, int] = EpochCache(ttl=1.0, unverified_ttl=0.5)
    cache.put("k", b"e", 1, time.monotonic() - 2.0)
    assert cache.get("k", b"e") == (False, None)


def test_without_the_epoch_an_entry_holds_briefly_only() -> None:
    cache: EpochCache[str, None] = EpochCache(ttl=60.0, unverified_ttl=0.5)
    cache.put("fresh", b"e", None, time.monotonic())
    cache.put("older", b"e", None, time.monotonic() - 1.0)
    assert cache.get("fresh", None) == (True, None), "a cached 'not found' is a value too"
    assert cache.get("older", None) == (False, None)
    cache.put("loaded-blind", None, None, time.monotonic())
    assert cache.get("loaded-blind", b"e") == (False, None), "never trusted once Redis is back"


def test_bounded_size() -> None:
    cache: EpochCache[int, int] = EpochCache(ttl=60.0, unverified_ttl=0.5, max_entries=3)
    now = time.monotonic()
    for i in range(4):
        cache.put(i, b"e", i, now)
    assert cache.get(3, b"e") == (True, 3)
    assert cache.get(0, b"e") == (False, None)
