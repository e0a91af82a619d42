"""Topic names and partition counts, and creating them on a broker.

Faust declares the same topics (streams/app.py); creating them here lets the
gateway produce to ``webhooks.raw`` before any worker ran.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

WEBHOOKS_RAW = "webhooks.raw"
MESSAGES_NORMALIZED = "messages.normalized"
MESSAGES_RESOLVED = "messages.resolved"
MESSAGES_RETRIEVED = "messages.retrieved"
MESSAGES_GENERATED = "messages.generated"
MESSAGES_SEND = "messages.send"
MESSAGES_SENT = "messages.sent"
MESSAGES_STATUS = "messages.status"
USAGE_EVENTS = "usage.events"
AUDIT_EVENTS = "audit.events"
DEADLETTER = "deadletter"
DOCUMENTS_INGEST = "documents.ingest"

PIPELINE_TOPICS = (
    WEBHOOKS_RAW,
    MESSAGES_NORMALIZED,
    MESSAGES_RESOLVED,
    MESSAGES_RETRIEVED,
    MESSAGES_GENERATED,
    MESSAGES_SEND,
    MESSAGES_SENT,
    MESSAGES_STATUS,
    USAGE_EVENTS,
    AUDIT_EVENTS,
    DEADLETTER,
    DOCUMENTS_INGEST,
)


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://h1:p1,h2:p2`` (faust's form) → ``h1:p1,h2:p2`` (aiokafka's)."""
    return ",".join(part.split("://", 1)[-1] for part in broker_url.split(","))


async def ensure_topics(broker_url: str, partitions: int, timeout: float = 15.0) -> list[str]:
    """Create the pipeline topics that do not exist yet; return those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url))
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in PIPELINE_TOPICS if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            except KafkaError as exc:  # another process created them first
                log.info("create_topics: %s", exc)
        return missing
    finally:
        await admin.close()
