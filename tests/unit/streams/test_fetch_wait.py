"""The fetch wait grows once no records came for a while, and drops with the first one."""

from __future__ import annotations

from streams.fetch_wait import IdleWait


def test_records_keep_the_short_wait() -> None:
    wait = IdleWait(busy_ms=20, idle_ms=100, idle_after=0.0)
    assert wait.observe(True) == 20


def test_an_empty_fetch_after_the_idle_time_lengthens_it_and_records_shorten_it() -> None:
    wait = IdleWait(busy_ms=20, idle_ms=100, idle_after=0.0)
    assert wait.observe(False) == 100
    assert wait.observe(True) == 20


def test_an_empty_fetch_within_the_idle_time_keeps_the_short_wait() -> None:
    wait = IdleWait(busy_ms=20, idle_ms=100, idle_after=3600.0)
    assert wait.observe(False) == 20


def test_the_idle_wait_is_never_shorter_than_the_busy_one() -> None:
    assert IdleWait(busy_ms=50, idle_ms=10, idle_after=0.0).observe(False) == 50


async def test_install_sets_the_next_request_wait() -> None:
    class Fetcher:
        _fetch_max_wait_ms = 20

        async def _proc_fetch_request(self, assignment: object, node: int, req: object) -> bool:
            return req == "records"

    fetcher = Fetcher()
    IdleWait(busy_ms=20, idle_ms=100, idle_after=0.0).install(fetcher)
    assert await fetcher._proc_fetch_request(None, 0, "empty") is False
    assert fetcher._fetch_max_wait_ms == 100
    assert await fetcher._proc_fetch_request(None, 0, "records") is True
    assert fetcher._fetch_max_wait_ms == 20
