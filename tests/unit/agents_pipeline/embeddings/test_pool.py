"""EncodePool: every call gets its own vectors in order, batches pool calls and match
lengths, queries go first, errors and cancellations stay with their calls."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import numpy as np
import pytest

from agents_pipeline.embeddings.pool import EncodePool, _Entry, _Job, _nearest_in_length


class FakeModel:
    """Encodes a text as [len(text), 1.0]; records its batches; can be held at a gate."""

    def __init__(self, *, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.inside = threading.Semaphore(0)  # released once per batch that reached the model
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        self.inside.release()
        self.gate.wait()
        self.batches.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


async def held(model: FakeModel, pool: EncodePool, first: str) -> asyncio.Task[list[list[float]]]:
    """A call whose batch the model holds at its gate, so that later calls queue up."""
    model.gate.clear()
    task = asyncio.create_task(pool.run([first]))
    await asyncio.to_thread(model.entered.wait)
    return task


async def test_each_call_gets_its_vectors_in_order() -> None:
    model = FakeModel()
    pool = EncodePool(model, workers=2, batch_size=3)
    try:
        texts = ["a" * n for n in (5, 1, 9, 3, 7, 2, 8)]
        one, two = await asyncio.gather(pool.run(texts), pool.run(["xy", "xyz"]))
        assert [v[0] for v in one] == [5, 1, 9, 3, 7, 2, 8]
        assert [v[0] for v in two] == [2, 3]
        assert max(len(b) for b in model.batches) <= 3
        assert await pool.run([]) == []
    finally:
        pool.close()


async def test_calls_waiting_together_share_batches() -> None:
    model = FakeModel()
    pool = EncodePool(model, workers=1, batch_size=8)
    try:
        first = await held(model, pool, "first")
        a = asyncio.create_task(pool.run(["aa", "aaa"]))
        b = asyncio.create_task(pool.run(["bb", "bbb"]))
        await asyncio.sleep(0.01)  # both are queued behind the held batch
        model.gate.set()
        await asyncio.gather(first, a, b)
        assert sorted(model.batches[1]) == ["aa", "aaa", "bb", "bbb"]
    finally:
        pool.close()


async def test_a_query_goes_before_waiting_passages() -> None:
    model = FakeModel()
    pool = EncodePool(model, workers=1, batch_size=2)
    try:
        first = await held(model, pool, "first")
        passages = asyncio.create_task(pool.run([f"passage {i}" for i in range(6)]))
        await asyncio.sleep(0.01)
        query = asyncio.create_task(pool.run(["query"], urgent=True))
        await asyncio.sleep(0.01)
        model.gate.set()
        await asyncio.gather(first, passages, query)
        assert model.batches[1] == ["query"]
    finally:
        pool.close()


async def test_a_short_queue_is_split_over_the_free_threads() -> None:
    model = FakeModel()
    pool = EncodePool(model, workers=2, batch_size=8)
    try:
        model.gate.clear()  # neither thread finishes before the other has taken its share
        call = asyncio.create_task(pool.run([f"t{i}" for i in range(8)]))
        for _ in range(2):
            await asyncio.to_thread(model.inside.acquire)
        model.gate.set()
        await call
        assert sorted(len(b) for b in model.batches) == [4, 4]
    finally:
        pool.close()


def test_a_batch_is_the_oldest_text_and_those_nearest_in_length() -> None:
    job = _Job(asyncio.new_event_loop(), None, [], 0)  # type: ignore[arg-type]
    try:
        queue = deque(_Entry(job, i, "x" * n) for i, n in enumerate([50, 10, 48, 200, 52, 11]))
        batch = _nearest_in_length(queue, 3)
        assert [len(e.text) for e in batch] == [50, 48, 52]
        assert [len(e.text) for e in queue] == [10, 200, 11]  # the rest keep their order
        assert [len(e.text) for e in _nearest_in_length(queue, 3)] == [10, 200, 11]
    finally:
        job.loop.close()


async def test_an_encode_error_fails_its_calls_and_the_pool_goes_on() -> None:
    model = FakeModel(fail_on="bad")
    pool = EncodePool(model, workers=1, batch_size=4)
    try:
        with pytest.raises(ValueError, match="bad"):
            await pool.run(["good", "bad"])
        assert [v[0] for v in await pool.run(["fine"])] == [4]
    finally:
        pool.close()


async def test_a_cancelled_call_is_not_encoded() -> None:
    model = FakeModel()
    pool = EncodePool(model, workers=1, batch_size=2)
    try:
        first = await held(model, pool, "first")
        gone = asyncio.create_task(pool.run(["gone 1", "gone 2", "gone 3"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        model.gate.set()
        await first
        assert [v[0] for v in await pool.run(["kept"])] == [4]
        assert not any(t.startswith("gone") for b in model.batches for t in b)
    finally:
        pool.close()


async def test_closed_pool_starts_again_on_the_next_call() -> None:
    model = FakeModel()
    pool = EncodePool(model, workers=2, batch_size=2, name="fake")
    await pool.run(["one"])
    pool.close()
    for thread in [t for t in threading.enumerate() if t.name.startswith("fake-")]:
        await asyncio.to_thread(thread.join, 5)
    assert not [t for t in threading.enumerate() if t.name.startswith("fake-")]
    assert [v[0] for v in await pool.run(["again"])] == [5]
    pool.close()


def test_needs_a_worker_and_a_batch() -> None:
    with pytest.raises(ValueError):
        EncodePool(FakeModel(), workers=0, batch_size=8)
