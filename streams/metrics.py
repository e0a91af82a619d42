"""The workers' Prometheus metrics: per stage in, out, failed and latency; dedupe hits."""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agents_pipeline.llm.pricing import model_label

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StreamMetrics:
    """One set per worker process."""

    def __init__(
        self, registry: CollectorRegistry | None = None, extra_models: Collection[str] = ()
    ) -> None:
        self.extra_models = frozenset(extra_models)
        self._model_labels: dict[str, str] = {}
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "omnichat_stage_events_in_total", "Events a stage consumed.", ["stage"], registry=r
        )
        self.events_out = Counter(
            "omnichat_stage_events_out_total", "Events a stage produced.", ["stage"], registry=r
        )
        self.events_failed = Counter(
            "omnichat_stage_events_failed_total",
            "Events a stage dead-lettered or failed.",
            ["stage"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "omnichat_stage_duration_seconds",
            "Processing time of one batch of a stage.",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.dedupe_hits = Counter(
            "omnichat_dedupe_hits_total",
            "Repeats dropped by a stage's dedupe.",
            ["stage"],
            registry=r,
        )
        self.reply_latency = Histogram(
            "omnichat_reply_latency_seconds",
            "From webhook accepted by the gateway to the reply sent (or stored).",
            buckets=BUCKETS,
            registry=r,
        )
        self.llm_calls = Counter(
            "omnichat_llm_calls_total",
            "LLM calls by model and outcome.",
            ["model", "outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "omnichat_llm_tokens_total",
            "LLM tokens by model and kind.",
            ["model", "kind"],
            registry=r,
        )
        self.llm_latency = Histogram(
            "omnichat_llm_duration_seconds",
            "LLM call latency.",
            ["model"],
            buckets=BUCKETS,
            registry=r,
        )
        self.llm_cost = Counter(
            "omnichat_llm_cost_usd_total",
            "Estimated LLM cost in USD by model.",
            ["model"],
            registry=r,
        )
        self.send_deferrals = Counter(
            "omnichat_send_deferrals_total",
            "Sends deferred to send_deferrals, by reason (rate_limited, circuit_open, ...).",
            ["reason"],
            registry=r,
        )
        self.send_requeued = Counter(
            "omnichat_send_requeued_total",
            "Deferred sends produced to messages.send again by the sweep.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "omnichat_consumer_lag",
            "Messages behind the end of each topic partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.documents = Counter(
            "omnichat_documents_ingested_total",
            "Documents ingested, by outcome (ready, failed, skipped).",
            ["outcome"],
            registry=r,
        )
        self.chunks_indexed = Counter(
            "omnichat_chunks_indexed_total", "Chunks embedded and written.", registry=r
        )
        self.ingest_latency = Histogram(
            "omnichat_document_ingest_duration_seconds",
            "Time to ingest one document.",
            buckets=BUCKETS,
            registry=r,
        )
        self.sends = Counter(
            "omnichat_provider_sends_total",
            "Provider send attempts by provider and outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self.window_refusals = Counter(
            "omnichat_window_refusals_total",
            "Replies not sent because WhatsApp's 24-hour window was closed.",
            registry=r,
        )
        self.quota_refusals = Counter(
            "omnichat_quota_refusals_total",
            "Messages answered with the fallback text because a monthly limit was reached.",
            ["metric"],
            registry=r,
        )
        self.stalls = Counter(
            "omnichat_stream_stalls_total",
            "Partitions found stuck after a rebalance and sought back (streams/app.py).",
            registry=r,
        )
        self.retrieval_errors = Counter(
            "omnichat_retrieval_errors_total",
            "Messages answered without knowledge because the search failed.",
            registry=r,
        )
        self.deadletters_kept = Counter(
            "omnichat_deadletters_total",
            "Failed records kept in the deadletters table (a repeat counts once), by stage.",
            ["stage"],
            registry=r,
        )
        self.needing_attention = Counter(
            "omnichat_conversations_needing_attention_total",
            "Conversations flagged as needing a person, by reason.",
            ["reason"],
            registry=r,
        )

    def model(self, name: str) -> str:
        """The ``model`` label of an LLM call: priced, offline or allowed names, else ``other``
        (``agents_pipeline.llm.pricing.model_label``)."""
        label = self._model_labels.get(name)
        if label is None:
            label = model_label(name, self.extra_models)
            if len(self._model_labels) < 10_000:  # a memo, bounded like the labels
                self._model_labels[name] = label
        return label
