"""A faust transport whose consumer fetch wait is our setting, not faust's fixed 1500 ms.

It also takes table recovery's end offsets from ``streams/offsets.py``, because the
dev broker's ListOffsets answers short (see there), never commits past a gap, and
delivers records without faust's per-record tasks (``streams/inline.py``).

Tansu (the dev broker) holds a fetch that found no data for the whole wait
instead of answering when data arrives, so every idle hop of the pipeline costs
half the wait on average (~750 ms with faust's value). Redpanda and Kafka
answer at once; there the setting only bounds idle polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiokafka
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.utils.functional import consecutive_numbers

from streams import fetch_wait, inline, offsets

SCHEME = "omnikafka"
# Set by create_app before the worker starts (one app per process): the fetch wait
# while records flow, and once the worker is idle (streams/fetch_wait.py).
FETCH_MAX_WAIT_MS = {"value": 100, "idle": 100}


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with our fetch wait and true end offsets."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when start() builds its Fetcher, which has not happened yet.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS["value"]
        return consumer

    async def on_start(self) -> None:
        """Start the consumer, then let its fetch wait follow the traffic."""
        await super().on_start()
        wait = fetch_wait.IdleWait(FETCH_MAX_WAIT_MS["value"], FETCH_MAX_WAIT_MS["idle"])
        wait.install(self._ensure_consumer()._fetcher)

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """End offsets for table recovery, checked by a fetch (see streams/offsets.py)."""
        if self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        servers = faust_aiokafka.server_list(self.transport.url, self.transport.default_port)
        return await offsets.end_offsets(servers, partitions)  # type: ignore[return-value]


def commit_point(acked: list[int], committed: int | None) -> list[int]:
    """The acked offsets that the commit may move over, in order (sorts ``acked``).

    ``committed`` is the next offset to handle (Kafka's meaning). Only a run of
    acked offsets that starts there can be committed. faust-streaming 0.15.3
    checks ``min(acked) - committed > 1``: with the record at ``committed`` not
    done and the one after it acked, it committed past the missing record, which
    was then never handled (after a rebalance: one message lost in several
    handover runs). With no committed offset yet, the first run is taken, as faust
    does (the partition was read from its beginning).
    """
    acked.sort()
    if not acked or (committed is not None and acked[0] != committed):
        return []
    return next(consecutive_numbers(acked))


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer using ``ConsumerThread``, and never committing past a gap.

    faust treats a jump in the offsets it reads as a gap (transaction markers,
    compaction) and lets the commit move past it. Our topics have neither, but a
    record faust dropped during a rebalance (its delivery raced the flow's
    suspension while the read offset moved on) looks exactly like one, and was
    then committed without ever being handled. Without gaps, the commit stops at
    such a record instead, and ``streams/app.py``'s stall watchdog seeks back to
    deliver it again.
    """

    def ack(self, message: Any) -> bool:
        """Acknowledge a handled record, but never one read across a rebalance.

        faust's stream acks the records it *skips*: those read while the flow is
        suspended for a rebalance, or fetched under an older group generation. A
        skipped record's offset then counted as done, the commit moved past it, and
        the record was never handled (a worker's handover lost one inbound message
        in about twelve runs). Refused here, such a record holds the commit, and the
        seek to the committed offsets that ends every rebalance delivers it again, in
        order. A handled record refused the same way is only handled again: every
        stage is idempotent.
        """
        app = self.app
        if (
            not self.flow_active
            or not app.flow_control.is_active()
            or message.generation_id != app.consumer_generation_id
        ):
            return False
        return super().ack(message)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``: see ``commit_point``."""
        acked = self._acked[tp]
        if not acked:
            return None
        committed = self._committed_offset[tp]
        if committed is not None and min(acked) < committed:  # already committed
            stale = [offset for offset in acked if offset < committed]
            acked[:] = [offset for offset in acked if offset >= committed]
            self._acked_index[tp].difference_update(stale)
        done = commit_point(acked, committed)
        if done:
            del acked[: len(done)]
            self._acked_index[tp].difference_update(done)
            return done[-1] + 1
        return None

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        return None

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (the worker's)
        """faust-streaming 0.15.3's fetch loop, delivering each record inline when it can.

        faust races every delivery against the flow's suspension with ``wait_first``
        (four tasks per record: ~10% of a worker's CPU). Here a delivery runs in place
        up to its first wait (``streams/inline.py``); only one that blocks (a full
        buffer, flow control) is raced against the suspension as faust does. The rest
        of the loop is faust's, line for line (our topics have no gaps: ``_add_gap``).
        """
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                # As faust: getmany can return at once in a loop, never yielding otherwise.
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            rest = inline.start(callback(message))
                            if rest is not None:
                                await self.wait_first(rest, self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport using ``Consumer``."""

    Consumer = Consumer


TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")


def faust_broker_url(broker_url: str) -> str:
    """``kafka://h:p,h2:p2`` → ``omnikafka://h:p;omnikafka://h2:p2`` for faust."""
    hosts = [part.split("://", 1)[-1] for part in broker_url.split(",")]
    return ";".join(f"{SCHEME}://{h}" for h in hosts)
