"""The journal's group-commit waiting, without a database: a batch is one shared future."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.journal import Journal, JournalUnavailable
from gateway.metrics import GatewayMetrics
from omnichat.settings import Settings


def journal(timeout: float = 0.05) -> Journal:
    """A journal whose flushers never start: its batches are resolved by hand here."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        broker_url="kafka://127.0.0.1:1",
        database_url="postgresql://nowhere/x",
        produce_timeout_seconds=timeout,
    )
    return Journal(settings, producer=None, pool=None, metrics=GatewayMetrics())  # type: ignore[arg-type]


def send(j: Journal, n: int) -> Any:
    return j.send("webhooks.raw", key=b"k", value=b"%d" % n, headers=[("trace_id", b"t")])


async def test_requests_share_one_batch_and_return_when_it_commits() -> None:
    j = journal(timeout=5.0)
    waiting = [asyncio.create_task(send(j, n)) for n in range(3)]
    await asyncio.sleep(0)
    assert [seq for seq, _ in j._pending] == [1, 2, 3]
    j._pending = []
    j._batch.set_result(None)  # what a flusher does once the INSERT committed
    took = await asyncio.wait_for(asyncio.gather(*waiting), 1.0)
    assert all(t >= 0 for t in took)


async def test_a_cancelled_request_does_not_cancel_the_others_commit() -> None:
    j = journal(timeout=5.0)
    first, second = asyncio.create_task(send(j, 1)), asyncio.create_task(send(j, 2))
    await asyncio.sleep(0)
    first.cancel()  # a client gone: its wait is cancelled, the batch is not
    await asyncio.sleep(0)
    assert not j._batch.done()
    j._batch.set_result(None)
    assert await asyncio.wait_for(second, 1.0) >= 0
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_commit_that_never_comes_fails_its_requests_in_time() -> None:
    j = journal(timeout=0.05)  # the batch gives up after twice this
    results = await asyncio.wait_for(
        asyncio.gather(send(j, 1), send(j, 2), return_exceptions=True), 2.0
    )
    assert all(isinstance(r, JournalUnavailable) for r in results), results
    assert results[0].code == "journal_unavailable"
