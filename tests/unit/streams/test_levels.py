"""PIPELINE_LEVELS, the order a wave (streams/progress.py) walks the topics in, matches the app."""

from __future__ import annotations

from omnichat.settings import Settings
from streams import topics as t
from streams.app import create_app

# What each stage produces, by the topic it consumes (streams/agents/): a wave is right only
# if every output lands on a later level (or on a topic no stage consumes).
OUTPUTS = {
    t.WEBHOOKS_RAW: {t.MESSAGES_NORMALIZED, t.MESSAGES_STATUS, t.DEADLETTER},
    t.MESSAGES_NORMALIZED: {t.MESSAGES_RESOLVED, t.USAGE_EVENTS, t.AUDIT_EVENTS, t.DEADLETTER},
    t.MESSAGES_STATUS: {t.DEADLETTER},
    t.MESSAGES_RESOLVED: {t.MESSAGES_RETRIEVED, t.DEADLETTER},
    t.MESSAGES_RETRIEVED: {t.MESSAGES_GENERATED, t.USAGE_EVENTS, t.AUDIT_EVENTS, t.DEADLETTER},
    t.MESSAGES_GENERATED: {t.MESSAGES_SEND, t.DEADLETTER},
    t.MESSAGES_SEND: {t.MESSAGES_SENT, t.USAGE_EVENTS, t.AUDIT_EVENTS, t.DEADLETTER},
    t.USAGE_EVENTS: {t.DEADLETTER},
    t.AUDIT_EVENTS: {t.DEADLETTER},
    t.DOCUMENTS_INGEST: {t.DEADLETTER},
    t.DEADLETTER: set(),  # kept in PostgreSQL (streams/agents/deadletters.py)
}


def level_of(topic: str) -> int | None:
    for i, level in enumerate(t.PIPELINE_LEVELS):
        if topic in level:
            return i
    return None


def test_the_levels_hold_every_topic_an_agent_consumes_once() -> None:
    app = create_app(
        Settings(_env_file=None, broker_url="kafka://127.0.0.1:1", database_url="postgresql://x")
    )
    consumed = {agent.channel.get_topic_name() for agent in app.agents.values()}
    listed = [topic for level in t.PIPELINE_LEVELS for topic in level]
    assert sorted(listed) == sorted(consumed) == sorted(OUTPUTS)


def test_every_output_lands_on_a_later_level() -> None:
    for source, outputs in OUTPUTS.items():
        here = level_of(source)
        assert here is not None
        for out in outputs:
            there = level_of(out)
            assert there is None or there > here, (source, out)
