"""Settings: one pydantic-settings class, built once by the entry point and passed down.

Every field reads the environment variable ``OMNICHAT_<FIELD>`` (or a line of
``.env``). Broker, database and Redis are URLs; left unset, ``omnichat dev``
starts the embedded server for that part. docs/CONFIGURATION.md lists them all.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All of Omnichat's settings."""

    model_config = SettingsConfigDict(
        env_prefix="OMNICHAT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Platform
    admin_token: SecretStr | None = Field(
        default=None, description="Platform admin token (dev generates one when unset)."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts channel credentials at rest "
        "(dev generates one into the data dir when neither it nor SECRET_KEYS is set).",
    )
    # Key rotation: several Fernet keys at once (docs/DEPLOY.md, "Rotating the secret key").
    secret_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated Fernet keys: the first encrypts, every one decrypts. "
        "With SECRET_KEY also set, SECRET_KEY is one more decryption key after these "
        "(unless listed). `omnichat rotate-secrets` re-encrypts everything with the first.",
    )
    data_dir: Path = Field(default=Path(".omnichat"), description="Embedded servers' data.")
    log_level: str = Field(default="INFO", description="Log level of every process.")

    # Gateway
    gateway_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(default=8080, description="Gateway port.")
    public_base_url: str | None = Field(
        default=None, description="Public URL of the gateway, used in channels' webhook_url."
    )
    max_body_bytes: int = Field(default=1024 * 1024, description="Webhook body limit (413).")
    produce_timeout_seconds: float = Field(
        default=5.0, description="Bound on the broker's ack before a webhook gets 503."
    )
    retry_after_seconds: int = Field(default=5, description="Retry-After on a 503.")
    idempotency_ttl_seconds: int = Field(
        default=7 * 24 * 3600, description="TTL of the Redis idempotency fast path."
    )
    auth_cache_seconds: float = Field(
        default=3.0,
        description="Longest a process trusts a cached API key or channel. A revocation, a "
        "workspace or channel change is seen at once everywhere (the auth epoch in Redis); "
        "this bounds only changes made behind the API's back (SQL).",
    )
    auth_cache_unverified_seconds: float = Field(
        default=0.5,
        description="While Redis (the auth epoch) is unreachable, how long a cached API key "
        "or channel is still trusted: fail closed, a revocation waits at most this long.",
    )

    # Taps (GET /api/v1/taps/{topic}): bounds on what one workspace can pull from the broker
    tap_max_open_per_workspace: int = Field(
        default=5,
        ge=1,
        description="Taps one workspace may hold open at once, across every gateway process "
        "(429 past it; counted in Redis, per process while Redis is away).",
    )
    tap_max_lookback_seconds: int = Field(
        default=3600,
        ge=0,
        description="How far back a tap may start (from= a time, an offset or earliest): "
        "400 for a start older than this. 0: no limit.",
    )

    # Dependencies (unset: embedded server)
    broker_url: str | None = Field(default=None, description="kafka://host:port[,host:port]")
    database_url: str | None = Field(default=None, description="postgresql://...")
    redis_url: str | None = Field(default=None, description="redis://host:port/db")
    database_pool_min: int = Field(default=1, description="Smallest database pool per process.")
    database_pool_max: int = Field(default=10, description="Largest database pool per process.")

    # Stream workers
    worker_id: str = Field(default="omnichat", description="Faust app id (consumer group).")
    topic_partitions: int = Field(default=4, description="Partitions of every pipeline topic.")
    fetch_max_wait_ms: int = Field(
        default=20,
        description="Consumer fetch wait: the idle-hop latency on brokers that hold a fetch "
        "for its whole wait (Tansu). Faust's own value is 1500.",
    )
    fetch_idle_wait_ms: int = Field(
        default=100,
        description="Consumer fetch wait once no record came for half a second: fewer "
        "empty fetches while idle (Tansu answers an empty fetch only at the end of its "
        "wait). The first hop after a quiet spell waits up to this long; under traffic "
        "the wait is fetch_max_wait_ms.",
    )
    worker_session_timeout_seconds: float = Field(
        default=6.0,
        description="Consumer group session and rebalance timeout: how soon a dead worker's "
        "partitions move to another.",
    )
    stall_seconds: float = Field(
        default=20.0,
        description="A partition whose commit has not moved for this long while records "
        "wait (read past it, or the end offset beyond it) is resumed and sought back to its "
        "committed offset (a rebalance can skip a record or leave a partition paused). "
        "Longer than the slowest handling of one batch.",
    )
    worker_web_bind: str = Field(
        default="127.0.0.1",
        description="Address of the worker's web server (metrics, views); 0.0.0.0 in containers.",
    )
    worker_web_port: int = Field(default=6066, description="Faust web (metrics, views).")
    worker_advertised_url: str | None = Field(
        default=None,
        description="URL other workers reach this one at, to forward an admin view to the "
        "owner of a workspace's partition. Unset: http://<bind or hostname>:<port>.",
    )
    human_takeover_seconds: int = Field(
        default=1800,
        description="How long a human reply from the phone keeps a conversation in human mode.",
    )

    # LLM and embeddings
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL (unset with no key: offline responder).",
    )
    llm_api_key: SecretStr | None = Field(default=None, description="Key of the LLM endpoint.")
    llm_model: str = Field(
        default="gpt-4o-mini", description="Model when an agent version names none."
    )
    llm_timeout_seconds: float = Field(default=30.0, description="Timeout of one LLM call.")
    llm_max_retries: int = Field(
        default=3, description="Retries on 429/5xx/timeouts, with backoff."
    )
    embedding_base_url: str | None = Field(
        default=None, description="OpenAI-compatible embeddings endpoint (the `openai` embedder)."
    )
    embedding_api_key: SecretStr | None = Field(default=None, description="Its key.")
    embedding_model: str = Field(default="text-embedding-3-small", description="Its model.")

    # Metrics: labels stay a bounded set (a model name is free text of a workspace)
    metrics_extra_models: str = Field(
        default="",
        description="Comma-separated model names that get their own Prometheus label besides "
        "the priced models and LLM_MODEL; any other model an agent version names is `other`.",
    )

    # Providers
    send_timeout_seconds: float = Field(
        default=10.0, description="Timeout of one provider send call."
    )
    send_max_attempts: int = Field(
        default=5,
        description="Provider calls per message on retriable errors (429/5xx/timeouts), "
        "counted across deferrals; then the message fails.",
    )

    # Outbound safety: where provider calls may go, and how one channel is kept from
    # holding the others (docs/ARCHITECTURE.md, send).
    allow_private_provider_urls: bool = Field(
        default=False,
        description="Let provider calls connect to loopback, private, link-local and other "
        "non-public addresses (a channel's base_url is the workspace's to set). Only for "
        "development and tests against local fakes; `omnichat dev` turns it on unless set.",
    )
    send_deadline_seconds: float = Field(
        default=15.0,
        description="Bound on one message's provider calls and in-line waits within a send "
        "batch; past it the message is deferred.",
    )
    send_inline_wait_seconds: float = Field(
        default=1.0,
        description="Longest wait (Retry-After or backoff) retried in-line; a longer one "
        "defers the message (send_deferrals) and the batch goes on.",
    )
    send_channel_concurrency: int = Field(
        default=8,
        description="Provider calls in flight per channel and worker; a message that finds "
        "no free slot within send_inline_wait_seconds is deferred.",
    )
    send_breaker_failures: int = Field(
        default=5,
        description="Consecutive failed calls (timeouts, connection errors, 429, 5xx) that "
        "open a channel's circuit breaker: its sends are deferred without a call.",
    )
    send_breaker_cooldown_seconds: float = Field(
        default=30.0,
        description="How long an open breaker waits before one probe call (half-open).",
    )
    send_batches_in_flight: int = Field(
        default=16,
        description="Batches of messages.send a worker handles at once (a key's messages "
        "stay in order): a slow call holds only its own batch.",
    )
    send_sweep_interval_seconds: float = Field(
        default=1.0,
        description="How often a worker produces due deferred sends to messages.send again.",
    )

    @property
    def fernet_keys(self) -> list[str]:
        """The Fernet keys, the encrypting one first: SECRET_KEYS, then SECRET_KEY if not listed."""
        keys: list[str] = []
        if self.secret_keys is not None:
            keys = [k.strip() for k in self.secret_keys.get_secret_value().split(",") if k.strip()]
        if self.secret_key is not None:
            single = self.secret_key.get_secret_value().strip()
            if single and single not in keys:
                keys.append(single)
        return keys

    @property
    def extra_model_labels(self) -> frozenset[str]:
        """Model names that are their own metric label (METRICS_EXTRA_MODELS and LLM_MODEL)."""
        names = {n.strip() for n in self.metrics_extra_models.split(",") if n.strip()}
        return frozenset(names | {self.llm_model})

    @property
    def llm_configured(self) -> bool:
        """True when an OpenAI-compatible endpoint is set (else: the offline responder)."""
        return bool(self.llm_base_url or self.llm_api_key)
