"""How far the pipeline's consumer group has got, and the *wave* that proves it carried a moment.

A wave walks ``PIPELINE_LEVELS`` in order. At each level it takes the true end offsets of the
level's topics, then waits until the group's committed offsets reach them. A stage commits a
record only after its outputs are acknowledged, and those outputs land on later levels, whose
ends are taken only after this level is done: so when the last level is done, every record that
was on the topics when the wave started has been handled, and so has everything it caused.
Unlike "consumer lag 0 everywhere", a wave completes under steady traffic (it takes about the
pipeline's latency plus a commit interval per level).

Used by a stopping gateway or worker (drain) and by the gateway's journal (a record may be
forgotten once a wave that started after its produce was acknowledged completes).

End offsets come from a fetch's high watermark (see streams/offsets.py: Tansu's ListOffsets
answers short), with one consumer kept for the purpose. It holds no partition between probes:
a client that asks for a missing topic's metadata makes Tansu auto-create it, which must not
happen to a restarted broker's topics before they are created with their partition count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streams.topics import EPOCH_TOPIC, PIPELINE_LEVELS, bootstrap_servers

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often a wave asks for committed offsets while it waits
PROBE_WAIT_MS = 10  # a fetch that finds nothing is held this long by Tansu


class MissingTopic(KafkaError):
    """A pipeline topic is not on the broker: one that lost its log, not one that is done."""


class Progress:
    """Committed and end offsets of one consumer group's pipeline topics on one broker.

    Owns an admin client and a probe consumer (no group); ``start``/``stop`` open and close
    them, and any broker error closes them so that the next call starts afresh.
    """

    def __init__(self, broker_url: str, group: str, *, timeout: float = 10.0) -> None:
        self._servers = bootstrap_servers(broker_url)
        self.group = group
        self.timeout = timeout
        self._admin: AIOKafkaAdminClient | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # one probe at a time: seeks and pauses are shared

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._servers, request_timeout_ms=int(self.timeout * 1000)
            )
            await asyncio.wait_for(admin.start(), self.timeout)
            self._admin = admin
        if self._probe is None:
            probe = AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                enable_auto_commit=False,
                fetch_max_wait_ms=PROBE_WAIT_MS,
                max_partition_fetch_bytes=64 * 1024,
                request_timeout_ms=int(self.timeout * 1000),
            )
            await asyncio.wait_for(probe.start(), self.timeout)
            self._probe = probe
        return self._admin, self._probe

    async def stop(self) -> None:
        """Close both clients (safe to call twice)."""
        admin, probe = self._admin, self._probe
        self._admin = self._probe = None
        if probe is not None:
            with contextlib.suppress(Exception):
                await probe.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _guarded(self, coro_fn):  # type: ignore[no-untyped-def]
        """Run a broker call; on failure close the clients (they may hold a dead broker)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await coro_fn()
        except (KafkaError, OSError, TimeoutError):
            await self.stop()
            raise

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        """The partitions of those topics; raises MissingTopic for one the broker lacks."""

        async def run() -> list[TopicPartition]:
            _, probe = await self._clients()
            # All topics' metadata: the probe's own refresh covers only its assignment.
            cluster = await probe._client.fetch_all_metadata()  # no public call for it
            out = []
            for topic in topics:
                parts = cluster.partitions_for_topic(topic)
                if not parts:
                    raise MissingTopic(topic)
                out.extend(TopicPartition(topic, p) for p in sorted(parts))
            return out

        return await self._guarded(run)

    async def ends(self, tps: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after each partition's last record (a fetch's high watermark)."""
        if not tps:
            return {}

        async def run() -> dict[TopicPartition, int]:
            _, probe = await self._clients()
            async with self._lock:
                probe.assign(list(tps))
                try:
                    listed = await probe.end_offsets(list(tps))
                    out = dict(listed)
                    pending = {tp for tp in tps if listed[tp] > 0}
                    for tp in pending:
                        probe.seek(tp, listed[tp] - 1)
                    while pending:
                        # Records come only from a fetch made after the seek, so the high
                        # watermark read beside them is fresh (not a stale one held before).
                        got = await probe.getmany(*pending, timeout_ms=100)
                        for tp in got:
                            if tp in pending:
                                out[tp] = max(out[tp], probe.highwater(tp) or 0)
                                pending.discard(tp)
                                probe.pause(tp)
                    return out
                finally:
                    probe.unsubscribe()

        return await self._guarded(run)

    async def committed(self, tps: Collection[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offset (the next to handle) of each partition; 0 for none."""
        if not tps:
            return {}

        async def run() -> dict[TopicPartition, int]:
            admin, _ = await self._clients()
            got = await admin.list_consumer_group_offsets(self.group, partitions=list(tps))
            return {tp: max(0, got[tp].offset) if tp in got else 0 for tp in tps}

        return await self._guarded(run)

    async def lag(self) -> int:
        """Records on the pipeline topics the group has not handled yet."""
        tps = await self.partitions(t for level in PIPELINE_LEVELS for t in level)
        ends = await self.ends(tps)
        done = await self.committed(tps)
        return sum(max(0, ends[tp] - done[tp]) for tp in tps)

    async def wave(self, poll: float = POLL_SECONDS) -> int:
        """Wait until every record now on the pipeline topics, and all it causes, is handled;
        returns how many records the group handled meanwhile on the way (a lower bound of
        the work the wave waited for). Cancel it to give up."""
        handled = 0
        for level in PIPELINE_LEVELS:
            tps = await self.partitions(level)
            ends = await self.ends(tps)
            first = True
            while True:
                done = await self.committed(tps)
                if first:
                    handled += sum(max(0, ends[tp] - done[tp]) for tp in tps)
                    first = False
                if all(done[tp] >= ends[tp] for tp in tps):
                    break
                await asyncio.sleep(poll)
        return handled

    # --- the broker's epoch ----------------------------------------------------------------

    async def epoch(self) -> str | None:
        """The marker of the broker's current log (None: missing or empty, a fresh broker)."""

        async def run() -> str | None:
            admin, probe = await self._clients()
            if EPOCH_TOPIC not in set(await admin.list_topics()):
                return None
            tp = TopicPartition(EPOCH_TOPIC, 0)
            async with self._lock:
                probe.assign([tp])
                try:
                    if (await probe.end_offsets([tp]))[tp] == 0:
                        return None
                    probe.seek(tp, 0)
                    while True:
                        got = await probe.getmany(tp, timeout_ms=100)
                        if got.get(tp):
                            return got[tp][0].value.decode()
                finally:
                    probe.unsubscribe()

        return await self._guarded(run)

    async def create_epoch_topic(self) -> None:
        """Create the epoch topic if it is missing (one partition)."""

        async def run() -> None:
            admin, _ = await self._clients()
            if EPOCH_TOPIC in set(await admin.list_topics()):
                return
            try:
                await admin.create_topics(
                    [NewTopic(EPOCH_TOPIC, num_partitions=1, replication_factor=1)]
                )
            except KafkaError as exc:  # another process created it first
                log.info("create epoch topic: %s", exc)

        await self._guarded(run)
