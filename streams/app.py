"""The Faust app: topics, tables and agents wired from settings.

``create_app(settings)`` builds everything; each agent lives in
``streams/agents/<stage>.py`` and calls the stage's plain functions in
``agents_pipeline/``.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

import faust
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from omnichat.settings import Settings
from streams import transport
from streams.metrics import StreamMetrics
from streams.produce import KeyPartitioner
from streams.resources import Resources
from streams.stalls import StallWatch
from streams.topology import Topics, declare_topics

log = logging.getLogger(__name__)


class OmnichatApp(faust.App):
    """faust.App that owns the worker's resources and closes them on stop."""

    resources: Resources
    metrics: StreamMetrics
    topics_: Topics
    settings: Settings

    async def on_stop(self) -> None:
        """Close the pool, HTTP session and LLM client after the agents stopped."""
        await super().on_stop()
        await self.resources.close()


class LazyKnowledge:
    """The knowledge search, built on first use (the pool opens with the first agent)."""

    def __init__(self, app: OmnichatApp) -> None:
        self.app = app
        self._search: object | None = None

    async def search(self, **kwargs: object) -> list:
        """Delegate to ``KnowledgeSearch.search``."""
        if self._search is None:
            from agents_pipeline.knowledge_search import KnowledgeSearch, embedder_factory

            pool = await self.app.resources.pool()
            self._search = KnowledgeSearch(pool, embedder_factory(self.app.settings))
        return await self._search.search(**kwargs)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Tables:
    """The app's tables."""

    dedupe: faust.Table
    usage: faust.Table
    quota: faust.Table
    stats: faust.Table


def advertised_url(settings: Settings) -> str:
    """Where other workers reach this one's web server (admin views are forwarded there)."""
    if settings.worker_advertised_url:
        return settings.worker_advertised_url
    host = settings.worker_web_bind
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{settings.worker_web_port}"


def _is_stream_partition(tp: TP) -> bool:
    """A partition of a topic the agents consume (not a table's changelog nor the
    assignor's): the ones consumer lag and the stall watchdog are about."""
    return not (tp.topic.endswith("-changelog") or "__assignor" in tp.topic)


def create_app(settings: Settings) -> OmnichatApp:
    """Build the app, its topics, tables and agents."""
    if not settings.broker_url:
        raise ValueError("the worker needs broker_url")
    transport.FETCH_MAX_WAIT_MS["value"] = settings.fetch_max_wait_ms
    transport.FETCH_MAX_WAIT_MS["idle"] = settings.fetch_idle_wait_ms
    app = OmnichatApp(
        settings.worker_id,
        broker=transport.faust_broker_url(settings.broker_url),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        # aiokafka sends one batch per partition per request, one request at a time: with
        # faust's 16 KiB batches a stage's burst of outputs took many round trips.
        producer_max_batch_size=512 * 1024,
        producer_partitioner=KeyPartitioner(),
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind=settings.worker_web_bind,
        web_port=settings.worker_web_port,
        canonical_url=advertised_url(settings),
        web_in_thread=False,
        broker_commit_interval=1.0,
        # Tansu holds a new group's join for about half the rebalance timeout: keep both short
        # so that a worker joins (and a dead member is replaced) in seconds, not half a minute.
        broker_session_timeout=settings.worker_session_timeout_seconds,
        broker_rebalance_timeout=settings.worker_session_timeout_seconds,
        broker_heartbeat_interval=1.0,
        stream_wait_empty=False,
        table_cleanup_interval=60.0,
    )
    app.settings = settings
    app.metrics = StreamMetrics(extra_models=settings.extra_model_labels)
    app.resources = Resources(settings, app.metrics)
    app.topics_ = declare_topics(app, settings.topic_partitions)

    def counters(name: str) -> faust.Table:
        """A table of integer counters keyed by string, partitioned like the topics."""
        return app.Table(
            name,
            default=int,
            partitions=settings.topic_partitions,
            key_type=str,
            value_type=int,
        )

    tables = Tables(
        dedupe=counters("webhook-dedupe"),
        usage=counters("usage-counters"),
        quota=counters("quota-counters"),
        stats=app.Table(
            "workspace-stats", default=dict, partitions=settings.topic_partitions, key_type=str
        ),
    )

    @app.page("/metrics")
    async def metrics(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        return web.bytes(
            generate_latest(app.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    @app.timer(5.0)
    async def measure_lag() -> None:
        """Consumer lag per assigned topic partition: highwater minus committed offset."""
        consumer = app.consumer
        for tp in consumer.assignment():
            if not _is_stream_partition(tp):
                continue
            high = consumer.highwater(tp)
            committed = consumer._committed_offset.get(tp)  # faust keeps it; no public getter
            if high is None:
                continue
            lag = max(0, high - (committed + 1 if committed is not None else 0))
            app.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    stalls: StallWatch[TP] = StallWatch(settings.stall_seconds)

    @app.timer(5.0)
    async def unstall() -> None:
        """Get a partition moving again when its commit stopped with records waiting.

        A rebalance can leave a partition stuck while the worker idles: a record
        whose ack was refused (streams/transport.py) holds the commit below records
        handled after it and no seek delivers it again, or the partition stays paused
        after the recovery that paused it. Either way its committed offset stops while
        records wait beyond it (``streams/stalls.py`` decides). Then the partition is
        resumed and the consumer seeks back to the committed offsets: the waiting
        records are delivered again (the stages are idempotent, so repeats change
        nothing).
        """
        consumer = app.consumer
        if app.in_recovery or not consumer.flow_active:
            stalls.clear()
            return
        # The committed offset is the next one to handle; the high watermark the offset
        # after the last record. No public getter for the committed offset.
        stuck = stalls.stuck(
            (
                (tp, consumer._committed_offset.get(tp), consumer.highwater(tp))
                for tp in consumer.assignment()
                if _is_stream_partition(tp)
            ),
            time.monotonic(),
        )
        if stuck:
            paused = consumer._paused_partitions  # no public getter
            log.warning(
                "commit stopped for %ss on %s: resuming and seeking back",
                settings.stall_seconds,
                ", ".join(
                    f"{tp.topic}[{tp.partition}] (committed {consumer._committed_offset.get(tp)},"
                    f" read {consumer._read_offset.get(tp)}, end {consumer.highwater(tp)},"
                    f" {'paused' if tp in paused else 'active'})"
                    for tp in stuck
                ),
            )
            app.metrics.stalls.inc(len(stuck))
            stalls.clear()
            consumer.resume_partitions(stuck)
            await consumer.perform_seek()

    from streams import views
    from streams.agents import deadletters, documents, normalize, pipeline, records

    normalize.register(app, tables.dedupe)
    pipeline.register(
        app,
        quota_counters=tables.quota,
        retriever=LazyKnowledge(app),
    )
    records.register(app, tables.usage, tables.stats)
    views.register(
        app, usage_counters=tables.usage, stats_table=tables.stats, quota_counters=tables.quota
    )
    documents.register(app)
    deadletters.register(app)
    return app
