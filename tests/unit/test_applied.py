"""Replayed records add nothing to a counting table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams import tables
from streams.applied import fresh, mark_applied


@dataclass
class FakeTable:
    data: dict[str, Any] = field(default_factory=dict)
    changelog: list[tuple[int, str, Any]] = field(default_factory=list)

    def send_changelog(self, partition: int, key: str, value: Any) -> None:
        self.changelog.append((partition, key, value))


@dataclass
class Msg:
    partition: int
    offset: int


@dataclass
class Ev:
    message: Msg
    amount: int


def count(table: FakeTable, events: list[Ev]) -> None:
    new = fresh(table, events)  # type: ignore[arg-type]
    for e in new:
        tables.add(table, e.message.partition, f"ws:{e.message.partition}", e.amount)  # type: ignore[arg-type]
    mark_applied(table, new)  # type: ignore[arg-type]


def test_a_replayed_batch_counts_once_and_new_records_still_count() -> None:
    table = FakeTable()
    batch = [Ev(Msg(0, 10), 1), Ev(Msg(1, 4), 5), Ev(Msg(0, 11), 2)]
    count(table, batch)
    assert table.data["ws:0"] == 3 and table.data["ws:1"] == 5
    count(table, batch)  # the worker died before committing: the same records again
    assert table.data["ws:0"] == 3 and table.data["ws:1"] == 5
    count(table, [Ev(Msg(0, 11), 2), Ev(Msg(0, 12), 7)])  # overlap, then a new record
    assert table.data["ws:0"] == 10


def test_the_mark_goes_after_the_increments_on_the_same_partition() -> None:
    table = FakeTable()
    count(table, [Ev(Msg(2, 0), 1), Ev(Msg(2, 1), 1)])
    assert [c[1] for c in table.changelog] == ["ws:2", "ws:2", "__applied__:2"]
    assert {c[0] for c in table.changelog} == {2}
