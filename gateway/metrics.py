"""The gateway's Prometheus metrics (names follow ``omnichat_<part>_<what>_<unit>``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    """One set per process (a registry of its own keeps tests independent)."""

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count a request; label children are cached (``labels()`` costs ~1.5 µs each).

        The method is the client's free text (aiohttp accepts any token): one outside
        ``METHODS`` is labelled ``OTHER``, so that no client can add series at will.
        """
        if method not in METHODS:
            method = "OTHER"
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._children: dict[tuple[str, str, int], tuple] = {}
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "omnichat_gateway_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "omnichat_gateway_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.produce_latency = Histogram(
            "omnichat_gateway_produce_duration_seconds",
            "Time from produce to the broker's ack (acks=all).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.webhooks_accepted = Counter(
            "omnichat_webhooks_accepted_total",
            "Webhooks made durable on webhooks.raw, by provider.",
            ["provider"],
            registry=r,
        )
        self.idempotent_hits = Counter(
            "omnichat_webhook_idempotent_hits_total",
            "Webhooks answered as repeats by the Redis fast path, by provider.",
            ["provider"],
            registry=r,
        )
        self.signature_failures = Counter(
            "omnichat_webhook_signature_failures_total",
            "Webhooks refused for a bad or missing signature or token, by provider.",
            ["provider"],
            registry=r,
        )
        self.broker_unavailable = Counter(
            "omnichat_webhook_broker_unavailable_total",
            "Webhooks answered 503 because the broker did not acknowledge in time.",
            registry=r,
        )
