"""Every topic the workers use, with its key and value contract (see streams/contracts.py).

Values travel as pydantic JSON (``raw`` serializer here, ``model_dump_json``
on send, ``model_validate_json`` on receive), so that the gateway, the
workers and an analyst's tap read the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from pydantic import BaseModel

from streams import topics as names


@dataclass(frozen=True)
class Topics:
    """The app's topic objects."""

    webhooks_raw: faust.TopicT
    normalized: faust.TopicT
    status: faust.TopicT
    resolved: faust.TopicT
    retrieved: faust.TopicT
    generated: faust.TopicT
    send: faust.TopicT
    sent: faust.TopicT
    usage: faust.TopicT
    audit: faust.TopicT
    deadletter: faust.TopicT
    documents: faust.TopicT


def declare_topics(app: faust.App, partitions: int) -> Topics:
    """Declare every topic with raw keys and values."""

    def t(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    return Topics(
        webhooks_raw=t(names.WEBHOOKS_RAW),
        normalized=t(names.MESSAGES_NORMALIZED),
        status=t(names.MESSAGES_STATUS),
        resolved=t(names.MESSAGES_RESOLVED),
        retrieved=t(names.MESSAGES_RETRIEVED),
        generated=t(names.MESSAGES_GENERATED),
        send=t(names.MESSAGES_SEND),
        sent=t(names.MESSAGES_SENT),
        usage=t(names.USAGE_EVENTS),
        audit=t(names.AUDIT_EVENTS),
        deadletter=t(names.DEADLETTER),
        documents=t(names.DOCUMENTS_INGEST),
    )


def encode(model: BaseModel) -> bytes:
    """A contract's bytes on a topic."""
    return model.model_dump_json().encode()
