"""``EncodePool``: a local model's encode on one thread per core, fed from every caller's texts.

Why threads of their own, one per core, each running the model single-threaded: on the
2-core machine MiniLM encoded the ops/eval chunks at ~73/s as two single-threaded encodes
of 4-8 texts at a time, against ~48/s as one two-threaded encode of 64 (one call, as before).
A two-threaded torch op waits at its barrier whenever anything else takes one of the
cores, and single-threaded parts of the forward pass leave a core idle; a batch of 64
sorted texts still pads more than one of 8.

Why one queue for every caller: the texts of concurrent calls (the documents being
ingested, a search's query) are pooled, so the threads take the next batch as soon as
they finish one, with no round trip through a possibly busy event loop, whichever
document it belongs to. A query goes before any passage waiting, so a search waits for
at most one batch in flight instead of a whole document.

A batch is the oldest waiting text and those nearest to it in length: a batch is padded
to its longest text, and taking the queue in order mixed one document's short last
chunks with the next one's long first ones (ops/eval documents, 4 at a time, batches of
8: 48% more padded tokens than real ones; nearest lengths: 26%, and 11% in batches of 4).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

Encode = Callable[[list[str]], "np.ndarray"]


@dataclass(eq=False)
class _Job:
    """One call's texts: where their vectors go, and the caller to wake."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]
    results: list[list[float]]
    remaining: int
    dropped: bool = False  # failed or cancelled: its texts still waiting are skipped


@dataclass
class _Entry:
    job: _Job
    index: int
    text: str

    @property
    def size(self) -> int:
        """The length batches are matched on (characters: what ``length_order`` sorts by)."""
        return len(self.text)


@dataclass
class _Queues:
    urgent: deque[_Entry] = field(default_factory=deque)
    normal: deque[_Entry] = field(default_factory=deque)


def _nearest_in_length(queue: deque[_Entry], size: int, window: int = 256) -> list[_Entry]:
    """Take the oldest entry and the ``size - 1`` nearest to it in length among the next
    ``window``, out of ``queue`` (the rest keep their order)."""
    head = queue.popleft()
    candidates = [queue.popleft() for _ in range(min(window, len(queue)))]
    nearest = sorted(range(len(candidates)), key=lambda i: abs(candidates[i].size - head.size))
    chosen = set(nearest[: size - 1])
    queue.extendleft(reversed([e for i, e in enumerate(candidates) if i not in chosen]))
    return [head, *(e for i, e in enumerate(candidates) if i in chosen)]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Set a future's outcome from its own loop, unless its caller gave up on it."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class EncodePool:
    """Runs ``encode(texts) -> rows`` on ``workers`` threads over the texts of every call."""

    def __init__(
        self,
        encode: Encode,
        *,
        workers: int,
        batch_size: int,
        name: str = "encode",
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1 or batch_size < 1:
            raise ValueError("an encode pool needs at least one worker and a batch of one")
        self.encode = encode
        self.workers = workers
        self.batch_size = batch_size
        self.name = name
        self.thread_setup = thread_setup
        self._cond = threading.Condition()
        self._queues = _Queues()
        self._threads: list[threading.Thread] = []
        self._generation = 0
        self._dropped = False  # some waiting texts belong to a dropped call
        self._busy = 0  # threads encoding a batch

    async def run(self, texts: Sequence[str], *, urgent: bool = False) -> list[list[float]]:
        """One vector per text, in order; ``urgent`` texts (a query) go before every
        waiting one."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), [[] for _ in texts], len(texts))
        with self._cond:
            self._start_threads()
            queue = self._queues.urgent if urgent else self._queues.normal
            queue.extend(_Entry(job, i, t) for i, t in enumerate(texts))
            self._cond.notify_all()
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._cond:
                job.dropped = self._dropped = True  # nobody waits for the rest: skip it
            raise

    def close(self) -> None:
        """Let the threads end once the queue is empty; a later ``run`` starts new ones."""
        with self._cond:
            self._generation += 1
            self._threads = []
            self._cond.notify_all()

    def _start_threads(self) -> None:
        """Start the threads on first use (called holding the lock)."""
        if self._threads:
            return
        for n in range(self.workers):
            thread = threading.Thread(
                target=self._work, args=(self._generation,), name=f"{self.name}-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _take(self, generation: int) -> list[_Entry] | None:
        """The next batch, urgent texts first; None when this thread's pool was closed and
        nothing is left."""
        with self._cond:
            while True:
                if self._dropped:  # a caller gave up or failed: forget its waiting texts
                    for queue in (self._queues.urgent, self._queues.normal):
                        live = [e for e in queue if not e.job.dropped]
                        queue.clear()
                        queue.extend(live)
                    self._dropped = False
                for queue in (self._queues.urgent, self._queues.normal):
                    if queue:
                        # A short queue is shared among the threads free to take it.
                        free = max(1, self.workers - self._busy)
                        size = min(self.batch_size, -(-len(queue) // free))
                        self._busy += 1
                        return _nearest_in_length(queue, size)
                if generation != self._generation:
                    return None
                self._cond.wait()

    def _work(self, generation: int) -> None:
        """A thread's loop: take a batch, encode it, hand each finished call its vectors."""
        if self.thread_setup is not None:
            self.thread_setup()
        while (batch := self._take(generation)) is not None:
            try:
                rows = self.encode([e.text for e in batch]).tolist()
                error: BaseException | None = None
            except Exception as exc:  # the callers get the error; the thread goes on
                rows, error = [], exc
            finished: list[_Job] = []
            with self._cond:
                self._busy -= 1
                if error is not None:
                    for job in {e.job: None for e in batch}:
                        if not job.dropped:
                            job.dropped = self._dropped = True
                            finished.append(job)
                else:
                    for entry, row in zip(batch, rows, strict=True):
                        entry.job.results[entry.index] = row
                        entry.job.remaining -= 1
                        if entry.job.remaining == 0:
                            finished.append(entry.job)
            for job in finished:
                try:
                    job.loop.call_soon_threadsafe(_resolve, job.future, job.results, error)
                except RuntimeError:  # the caller's loop is closed: nobody to tell
                    pass
