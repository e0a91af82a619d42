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
        "(dev generates one into the data dir when unset).",
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
        default=3.0, description="How long a gateway process trusts a cached API key/channel."
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

    # Ingestion: one document must not freeze or exhaust a worker
    extract_cpu_seconds: int = Field(
        default=30,
        ge=1,
        description="CPU time one document's extraction may use, in a child process; past it "
        "the document fails (extraction_limit).",
    )
    extract_memory_mb: int = Field(
        default=1024,
        ge=256,
        description="Memory (address space) of an extraction child process; a document that "
        "needs more fails (extraction_limit).",
    )
    extract_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Wall-clock bound on one document's extraction: a child stuck or starved "
        "that long is killed and the document fails (extraction_limit).",
    )
    extract_processes: int = Field(
        default=2, ge=1, description="Warm extraction child processes per worker."
    )
    ingest_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Claims of a document that may end without an outcome (its worker died, "
        "froze or failed on it) before it fails (attempts_exceeded).",
    )
    ingest_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a worker's claim on a document holds unless renewed (every "
        "third of it): no other worker or sweep takes the document before it runs out.",
    )

    # Providers
    send_timeout_seconds: float = Field(
        default=10.0, description="Timeout of one provider send call."
    )
    send_max_attempts: int = Field(
        default=5, description="Send attempts on retriable provider errors (429/5xx/timeouts)."
    )

    @property
    def llm_configured(self) -> bool:
        """True when an OpenAI-compatible endpoint is set (else: the offline responder)."""
        return bool(self.llm_base_url or self.llm_api_key)
