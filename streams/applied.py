"""Which source records a table already holds the effects of, so a replay adds nothing.

Faust commits consumer offsets every second and a table's changelog separately, so a
worker that dies in between is replayed records whose increments its table (rebuilt
from the changelog) already has. Counters are not idempotent: a replay would count
twice. So each agent that counts also writes, after its batch's increments and on the
same changelog partition, the highest source offset applied (``__applied__:<partition>``).
Records at or below it are skipped. One changelog partition keeps its writes in order,
so when the mark is there, the increments before it are too.
"""

from __future__ import annotations

from typing import Any

import faust

from streams import tables

PREFIX = "__applied__:"


def applied_offset(table: faust.Table, partition: int) -> int:
    """The highest offset of source ``partition`` whose effects ``table`` holds (-1: none)."""
    return int(table.data.get(f"{PREFIX}{partition}", -1))


def fresh(table: faust.Table, events: list[Any]) -> list[Any]:
    """The events of a batch that ``table`` has not applied yet."""
    marks: dict[int, int] = {}
    out = []
    for e in events:
        p = e.message.partition
        if p not in marks:
            marks[p] = applied_offset(table, p)
        if e.message.offset > marks[p]:
            out.append(e)
    return out


def mark_applied(table: faust.Table, events: list[Any]) -> None:
    """Record the batch's highest offset per partition (after its increments were written)."""
    top: dict[int, int] = {}
    for e in events:
        p, o = e.message.partition, e.message.offset
        if o > top.get(p, -1):
            top[p] = o
    for p, o in top.items():
        tables.put(table, p, f"{PREFIX}{p}", o)
