"""The journal: what the gateway accepts is durable in PostgreSQL before it is answered.

The ``Outbox`` (gateway/outbox.py) of a gateway whose broker keeps nothing across a restart
(the embedded Tansu). A record is made durable in the ``journal`` table and produced in the
background:

- webhooks are written in **group commits**: concurrent requests' records are one INSERT and
  one commit, a flush starting as soon as a previous one returns (``FLUSHES`` at once); the
  request is answered after its commit, without waiting for the broker (the journal, not the
  broker's ack, is what survives);
- a record is produced after its commit; one whose produce fails is produced again by the
  *keeper* (a task of this process) until the broker takes it;
- a record is deleted once a **wave** (streams/progress.py) that started after its ack has
  completed: the pipeline has carried it and everything it caused to its end;
- the broker's **epoch** (a marker record on ``omnichat.epoch``) tells a broker that lost its
  log: then every record not deleted yet is produced again, with a ``redrive`` header that
  makes normalize forward again what it had forwarded (the rest of the chain already does);
- each process writes its own **lane** and holds it with an advisory lock; a lane whose
  process died (lock free) is taken over and its records produced again (redriven), at start
  before the gateway reports ready, and every ``ADOPT_EVERY`` seconds.

The stages' own idempotency keys make every replay harmless (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from gateway.metrics import GatewayMetrics
from gateway.outbox import Drained, Key, Staged, broker_url, wave_within
from gateway.producer import BrokerUnavailable, DurableProducer, NotDurable
from omnichat.settings import Settings
from storage import journal as store
from storage.journal import Headers, Record
from streams.progress import Progress
from streams.topics import EPOCH_TOPIC, ensure_topics

log = logging.getLogger(__name__)

FLUSHES = 2  # group commits in flight at once: one fills while the other waits for fsync
TICK = 0.2  # seconds between the keeper's rounds
EPOCH_EVERY = 1.0  # how often the broker's epoch is checked
ADOPT_EVERY = 15.0  # how often lanes of dead processes are looked for
RESEND_BATCH = 1000  # records read back and produced again per keeper round
STARTUP_REPLAY_SECONDS = 30.0  # start-up waits this long for a replay before listening anyway
STUCK_WARNING = 300.0  # seconds without a completed wave, records waiting, before a warning
# Acknowledged records remembered for the next delete. Past this (no worker for long), the
# older half is forgotten here: they stay in the table, and the next gateway to start takes
# them over and produces them again (harmless repeats) rather than this one holding them all.
MAX_REMEMBERED = 500_000
REDRIVE = ("redrive", b"1")


class JournalUnavailable(NotDurable):
    """The journal did not commit in time (PostgreSQL away or too slow)."""

    code = "journal_unavailable"


def _expire(batch: asyncio.Future[None]) -> None:
    """A group commit that did not come in time: its requests get 503 (it may still land;
    the keeper then produces what it finds)."""
    if not batch.done():
        batch.set_exception(JournalUnavailable("the journal did not commit in time"))
        batch.exception()  # retrieved: every waiter may have gone


class Journal:
    """The journal on: durable in PostgreSQL first, produced in the background (see above)."""

    journal_on = True

    def __init__(
        self,
        settings: Settings,
        producer: DurableProducer,
        pool: AsyncConnectionPool,
        metrics: GatewayMetrics,
    ) -> None:
        assert settings.database_url
        self.settings = settings
        self.producer = producer
        self.pool = pool
        self.metrics = metrics
        self.timeout = settings.produce_timeout_seconds
        self.lane = uuid4()
        self.progress = Progress(broker_url(settings), settings.worker_id)
        self.ready = False  # start-up replay done
        self._seq = itertools.count(1)
        self._closing = False
        # group commit
        self._pending: list[tuple[int, Record]] = []
        self._batch: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle: deque[asyncio.Future[None]] = deque()  # flushers waiting for records
        self._flushing = 0
        self._tasks: list[asyncio.Task] = []
        # what is known of each record not yet deleted
        self._gen = 0  # bumped when the broker's epoch changes: older acks mean nothing
        self._inflight: dict[Key, bool] = {}  # produced, ack awaited (value: redrive)
        self._acked: list[Key] = []  # acknowledged since the last wave started
        self._covered: list[Key] = []  # acknowledged before the running wave started
        self._retry: dict[Key, bool] = {}  # to produce (again); value: with redrive
        self._wave: asyncio.Task | None = None
        self._epoch: str | None = None
        self._lanes: set[UUID] = {self.lane}  # ours and those taken over
        self._locks: psycopg.AsyncConnection | None = None  # holds the lanes' advisory locks
        self._next_epoch = 0.0
        self._next_adopt = 0.0
        self._carrying = False  # a drain runs its own wave: the keeper starts none
        self._progressed = time.monotonic()  # the last completed wave (or warning)

    # --- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Hold our lane, take over dead ones, replay what they hold (bounded), then keep.

        The app awaits this before it listens, so a replay normally goes ahead of new
        traffic; with the broker away it gives up at once and the keeper goes on (readiness
        says ``replaying`` until it is done)."""
        await self._hold_lanes()
        for _ in range(FLUSHES):
            self._tasks.append(asyncio.create_task(self._flusher(), name="journal-flush"))
        try:
            await self._adopt()
            await self._check_epoch()
            deadline = time.monotonic() + STARTUP_REPLAY_SECONDS
            while (self._retry or self._inflight) and time.monotonic() < deadline:
                await self._resend()
                await asyncio.sleep(0.05)
        except Exception as exc:
            log.warning("journal: start-up replay not finished, the keeper goes on: %r", exc)
        self._next_epoch = time.monotonic() + EPOCH_EVERY
        self._next_adopt = time.monotonic() + ADOPT_EVERY
        self.ready = self._epoch is not None and not (self._retry or self._inflight)
        self._tasks.append(asyncio.create_task(self._keep(), name="journal-keeper"))

    async def stop(self) -> None:
        """Stop the tasks and release our lanes (records left are replayed by the next start)."""
        self._closing = True
        if self._wave is not None:
            self._wave.cancel()
        while self._idle:
            self._idle.popleft().set_result(None)
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *([self._wave] if self._wave else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._pending and not self._batch.done():
            self._batch.set_exception(JournalUnavailable("the gateway is stopping"))
            self._batch.exception()
        if self._locks is not None:
            with contextlib.suppress(Exception):
                await self._locks.close()
            self._locks = None
        await self.progress.stop()

    def status(self) -> str:
        """For readiness: ``ok``, or ``replaying`` while the start-up replay runs."""
        return "ok" if self.ready else "replaying"

    def held(self) -> int:
        """Records this process knows of that are not deleted yet."""
        return (
            len(self._pending)
            + len(self._inflight)
            + len(self._acked)
            + len(self._covered)
            + len(self._retry)
        )

    async def _connect(self) -> psycopg.AsyncConnection:
        assert self.settings.database_url
        return await psycopg.AsyncConnection.connect(
            self.settings.database_url, autocommit=True, row_factory=dict_row
        )

    # --- accepting -------------------------------------------------------------------------

    async def send(self, topic: str, *, key: bytes | None, value: bytes, headers: Headers) -> float:
        """Durable once this returns: the record's group commit is done (or JournalUnavailable).

        The batch's future is shared by its requests, so each waits through a shield: a
        cancelled request must not cancel the others' commit. The time bound is the batch's,
        twice the produce timeout from its first record (two flushes' worth): one timer per
        batch rather than one per request.
        """
        if self._closing:
            raise JournalUnavailable("the gateway is stopping")
        started = time.perf_counter()
        batch = self._batch
        if not self._pending:  # the batch's first record: its time starts now
            expiry = asyncio.get_running_loop().call_later(2 * self.timeout, _expire, batch)
            batch.add_done_callback(lambda _: expiry.cancel())
        self._pending.append((next(self._seq), Record(topic, key, value, headers)))
        if self._idle:
            self._idle.popleft().set_result(None)
        await asyncio.shield(batch)
        return time.perf_counter() - started

    async def stage(
        self, conn: Any, topic: str, *, key: bytes | None, value: bytes, headers: Headers = ()
    ) -> Staged:
        """Write the record in the caller's transaction (it commits or rolls back with it)."""
        record = Record(topic, key, value, tuple(headers))
        seq = next(self._seq)
        await store.append(conn, lane=self.lane, seqs=[seq], records=[record])
        return Staged(record, (self.lane, seq))

    async def publish(self, staged: Staged) -> float:
        """The transaction committed: produce in the background (never fails: it is durable)."""
        assert staged.key is not None
        self.metrics.journal_records.inc()
        await self._produce([staged.key], [staged.record], redrive=False)
        return 0.0

    async def _flusher(self) -> None:
        """One group commit after another: everything pending, one INSERT, one commit."""
        loop = asyncio.get_running_loop()
        conn: psycopg.AsyncConnection | None = None
        try:
            while not self._closing:
                if not self._pending:
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._idle.append(waiter)
                    await waiter
                    continue
                batch, done = self._pending, self._batch
                self._pending, self._batch = [], loop.create_future()
                self._flushing += 1
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(self.timeout):
                        if conn is None or conn.closed:
                            conn = await self._connect()
                        await store.append(
                            conn,
                            lane=self.lane,
                            seqs=[seq for seq, _ in batch],
                            records=[r for _, r in batch],
                        )
                except Exception as exc:
                    log.warning("journal: group commit of %d records failed: %r", len(batch), exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    if not done.done():
                        done.set_exception(JournalUnavailable(f"journal commit failed: {exc!r}"))
                        done.exception()  # retrieved: every waiter may have given up
                    # It may have committed all the same: the keeper reads back what exists.
                    for seq, _ in batch:
                        self._retry[(self.lane, seq)] = False
                    continue
                finally:
                    self._flushing -= 1
                self.metrics.journal_commit.observe(time.perf_counter() - started)
                self.metrics.journal_batch.observe(len(batch))
                self.metrics.journal_records.inc(len(batch))
                # Handed to the producer before the requests are answered: a client that
                # sends its next webhook after this one's answer finds it queued behind.
                await self._produce(
                    [(self.lane, seq) for seq, _ in batch], [r for _, r in batch], redrive=False
                )
                if not done.done():
                    done.set_result(None)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    # --- producing -------------------------------------------------------------------------

    async def _produce(self, keys: list[Key], records: list[Record], *, redrive: bool) -> None:
        """Hand records to the producer; a record it cannot take goes to the keeper's retries."""
        gen = self._gen
        for i, (key, rec) in enumerate(zip(keys, records, strict=True)):
            headers = [*rec.headers, REDRIVE] if redrive else list(rec.headers)
            try:
                fut = await self.producer.enqueue(
                    rec.topic, key=rec.key, value=rec.value, headers=headers
                )
            except BrokerUnavailable:
                for k in keys[i:]:
                    self._retry[k] = redrive or self._retry.get(k, False)
                return
            self._inflight[key] = redrive
            fut.add_done_callback(partial(self._on_ack, key, gen))

    def _on_ack(self, key: Key, gen: int, fut: asyncio.Future) -> None:
        if gen != self._gen:
            return  # the broker's epoch changed since: the record is among the retries
        redrive = self._inflight.pop(key, False)
        if fut.cancelled() or fut.exception() is not None:
            self._retry[key] = redrive
            self.producer.failed()
            return
        self._acked.append(key)

    async def _resend(self) -> None:
        """Produce again up to RESEND_BATCH records of the retries, read back from the table."""
        if not self._retry:
            return
        if self.producer.suspect:
            await self.producer.verify()  # raises BrokerUnavailable: try again next round
        keys = sorted(self._retry)[:RESEND_BATCH]
        flags = {k: self._retry.pop(k) for k in keys}
        by_lane: dict[UUID, list[int]] = {}
        for lane, seq in keys:
            by_lane.setdefault(lane, []).append(seq)
        try:
            async with self.pool.connection() as conn:
                rows = {
                    lane: await store.read(conn, lane=lane, seqs=seqs)
                    for lane, seqs in by_lane.items()
                }
        except Exception:
            self._retry.update(flags)
            raise
        for lane, found in rows.items():
            for redrive in (False, True):
                picked = [r for r in found if flags[(lane, r["seq"])] is redrive]
                if not picked:
                    continue
                self.metrics.journal_replayed.labels("redrive" if redrive else "retry").inc(
                    len(picked)
                )
                await self._produce(
                    [(lane, r["seq"]) for r in picked],
                    [
                        Record(
                            r["topic"],
                            bytes(r["key"]) if r["key"] is not None else None,
                            bytes(r["value"]),
                            tuple(store.decode_headers(r["headers"])),
                        )
                        for r in picked
                    ],
                    redrive=redrive,
                )

    # --- keeping ---------------------------------------------------------------------------

    async def _keep(self) -> None:
        """The keeper: epoch, dead lanes, retries, waves and deletes, every TICK seconds."""
        while not self._closing:
            try:
                now = time.monotonic()
                if now >= self._next_epoch:
                    self._next_epoch = now + EPOCH_EVERY
                    await self._check_epoch()
                if now >= self._next_adopt:
                    self._next_adopt = now + ADOPT_EVERY
                    await self._adopt()
                await self._resend()
                if not self.ready and self._epoch and not (self._retry or self._inflight):
                    self.ready = True
                    log.info("journal: start-up replay done")
                if self._wave is None and self._acked and not self._carrying:
                    self._start_wave()
                self._warn_if_stuck(now)
                self._forget_if_too_many()
                self.metrics.journal_held.set(self.held())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("journal keeper: %r", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(TICK)

    async def _check_epoch(self) -> None:
        """Notice a broker that lost its log; start a new epoch on a fresh one."""
        epoch = await self.progress.epoch()
        if epoch is None:
            epoch = await self._new_epoch()
        if epoch == self._epoch:
            return
        previous, self._epoch = self._epoch, epoch
        if previous is None:
            return  # our first look: nothing of ours was produced yet
        self._gen += 1
        if self._wave is not None:
            self._wave.cancel()
            self._wave = None
        lost = [*self._inflight, *self._acked, *self._covered, *self._retry]
        self._inflight.clear()
        self._acked, self._covered = [], []
        for key in lost:
            self._retry[key] = True
        log.warning(
            "journal: the broker lost its log (epoch %s -> %s); producing %d records again",
            previous,
            epoch,
            len(lost),
        )

    async def _new_epoch(self) -> str:
        """A fresh broker: create the topics and write the marker (the first one written wins)."""
        await ensure_topics(broker_url(self.settings), self.settings.topic_partitions)
        await self.progress.create_epoch_topic()
        token = secrets.token_hex(8)
        # Partition 0 named: a Tansu client that asked for the topic's metadata before it was
        # created has it auto-created with several partitions.
        await self.producer.send(
            EPOCH_TOPIC, key=None, value=token.encode(), headers=[], partition=0
        )
        epoch = await self.progress.epoch()
        if epoch is None:
            raise BrokerUnavailable("the epoch marker did not stay on the broker")
        log.info("journal: broker epoch %s", epoch)
        return epoch

    async def _hold_lanes(self) -> None:
        """(Re)open the lock connection and hold every lane of ours."""
        if self._locks is not None and not self._locks.closed:
            return
        self._locks = await self._connect()
        for lane in list(self._lanes):
            if not await store.try_hold(self._locks, lane):
                log.warning("journal: lane %s is held by another process now", lane)

    async def _adopt(self) -> None:
        """Take over the lanes of dead processes, and let go of taken-over lanes left empty."""
        await self._hold_lanes()
        assert self._locks is not None
        async with self.pool.connection() as conn:
            found = set(await store.lanes(conn))
            for lane in found - self._lanes:
                if not await store.try_hold(self._locks, lane):
                    continue  # alive
                seqs = await store.seqs_of(conn, lane=lane)
                self._lanes.add(lane)
                for seq in seqs:
                    self._retry[(lane, seq)] = True
                log.info("journal: took over %d records of a stopped gateway", len(seqs))
            known = {lane for lane, _ in self._keys()}
            for lane in self._lanes - found - known - {self.lane}:
                self._lanes.discard(lane)
                await store.release(self._locks, lane)

    def _warn_if_stuck(self, now: float) -> None:
        """Say so when records wait and no wave has completed for long: no worker of the
        group ``OMNICHAT_WORKER_ID`` runs, or the broker is away (the journal keeps them)."""
        if not (self._covered or self._retry) or now - self._progressed < STUCK_WARNING:
            return
        self._progressed = now  # once per STUCK_WARNING
        log.warning(
            "journal: %d records wait and the pipeline has carried none for %.0f s: is a "
            "worker of group %r running, and the broker up?",
            self.held(),
            STUCK_WARNING,
            self.settings.worker_id,
        )

    def _forget_if_too_many(self) -> None:
        """Bound the memory of acknowledged records a stuck pipeline leaves (MAX_REMEMBERED)."""
        if len(self._acked) + len(self._covered) <= MAX_REMEMBERED:
            return
        keys = self._covered + self._acked
        half = len(keys) // 2
        self._covered, self._acked = [], keys[half:]
        if self._wave is not None:  # it covered records now forgotten: start over
            self._wave.cancel()
            self._wave = None
        log.warning(
            "journal: forgot %d acknowledged records (kept in the table for the next start)",
            half,
        )

    def _keys(self) -> Iterable[Key]:
        return itertools.chain(self._inflight, self._acked, self._covered, self._retry)

    def _start_wave(self) -> None:
        self._covered.extend(self._acked)
        self._acked = []
        self._wave = asyncio.create_task(self._run_wave(self._gen), name="journal-wave")

    async def _run_wave(self, gen: int) -> None:
        """Delete the covered records once a wave completes on the same broker epoch."""
        try:
            await self.progress.wave()
            if gen != self._gen or await self.progress.epoch() != self._epoch:
                return  # the epoch check moves them to the retries
            await self._prune()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next wave covers them again
            log.info("journal: wave not completed: %r", exc)
        finally:
            if self._wave is asyncio.current_task():
                self._wave = None

    async def _prune(self) -> None:
        self._progressed = time.monotonic()
        keys, self._covered = self._covered, []
        by_lane: dict[UUID, list[int]] = {}
        for lane, seq in keys:
            by_lane.setdefault(lane, []).append(seq)
        try:
            async with self.pool.connection() as conn:
                for lane, seqs in by_lane.items():
                    await store.delete(conn, lane=lane, seqs=seqs)
        except Exception:
            self._covered = keys + self._covered
            raise
        self.metrics.journal_pruned.inc(len(keys))

    # --- stopping --------------------------------------------------------------------------

    async def settle(self, timeout: float) -> bool:
        """Wait until everything accepted is committed, produced and acknowledged."""
        deadline = time.monotonic() + timeout
        while self._pending or self._flushing or self._inflight or self._retry:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def carry(self, timeout: float) -> Drained:
        """A wave over everything acknowledged so far; on success every record is deleted."""
        self._carrying = True
        if self._wave is not None:
            self._wave.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._wave
            self._wave = None
        self._covered.extend(self._acked)
        self._acked = []
        gen = self._gen
        drained = await wave_within(self.progress, timeout)
        if drained.complete and gen == self._gen:
            try:
                await self._prune()
            except Exception as exc:
                log.warning("journal: could not delete carried records: %r", exc)
        return drained
