"""streams.transport.Consumer: which acks reach faust's bookkeeping, and what is committed.

The consumer is built without a broker (``__new__`` and the few fields faust's own
``ack`` and ``_new_offset`` read, as its ``__init__`` sets them), so that our overrides
run against faust-streaming's real ack code.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any
from weakref import WeakSet

from faust.types import TP, Message

from streams.transport import Consumer

TOPIC = "messages.resolved"
PART = TP(TOPIC, 0)


def consumer(*, committed: int | None = None, generation: int = 7) -> Any:
    c: Any = Consumer.__new__(Consumer)
    c.app = SimpleNamespace(
        topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        flow_control=SimpleNamespace(active=True, is_active=lambda: c.app.flow_control.active),
        consumer_generation_id=generation,
    )
    c.flow_active = True
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._committed_offset = defaultdict(lambda: None)
    c._committed_offset[PART] = committed
    c._unacked_messages = WeakSet()
    c._n_acked = 0
    c._waiting_for_ack = None
    return c


def record(offset: int, generation: int = 7) -> Message:
    return Message(
        TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None, tp=PART, generation_id=generation
    )


def test_a_handled_record_is_acked() -> None:
    c = consumer(committed=3)
    assert c.ack(record(3)) is True
    assert c._acked[PART] == [3] and c._n_acked == 1


def test_no_ack_while_the_consumer_or_the_flow_is_suspended() -> None:
    c = consumer(committed=3)
    c.flow_active = False  # a rebalance started
    first = record(3)
    assert c.ack(first) is False
    c.flow_active = True
    c.app.flow_control.active = False
    assert c.ack(record(4)) is False
    assert c._acked[PART] == [] and c._n_acked == 0
    # Refused, not spent: the same record, delivered again after the rebalance, is acked.
    c.app.flow_control.active = True
    assert first.acked is False
    assert c.ack(first) is True and c._acked[PART] == [3]


def test_no_ack_for_a_record_fetched_under_an_older_generation() -> None:
    c = consumer(committed=3, generation=8)
    assert c.ack(record(3, generation=7)) is False
    assert c.ack(record(3, generation=8)) is True


def test_the_commit_waits_for_the_record_at_the_committed_offset() -> None:
    c = consumer(committed=3)
    c.ack(record(4))
    c.ack(record(5))
    assert c._new_offset(PART) is None  # 3 is not done: nothing may be committed
    c.ack(record(3))
    assert c._new_offset(PART) == 6  # 3, 4 and 5 done: the next one to handle is 6


def test_out_of_order_acks_commit_only_the_run_from_the_committed_offset() -> None:
    c = consumer(committed=10)
    for offset in (12, 10, 14, 11):
        c.ack(record(offset))
    assert c._new_offset(PART) == 13  # 10, 11, 12; 13 missing holds 14 back
