"""Seeding the mirrored tables: raise to the database's figures, never lower."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from streams.partitions import workspace_partition
from streams.seed import month_bounds, owned, raise_counters, raise_stats


def test_counters_are_raised_to_the_database_never_lowered() -> None:
    table = {"w:2026-12:inbound_answered": 7, "w:2026-12:llm_tokens": 500, "other": 3}
    raised = raise_counters(
        table,
        {"w:2026-12:inbound_answered": 9, "w:2026-12:llm_tokens": 400, "w:2026-12-01:x": 2},
    )
    assert raised == 2
    assert table == {
        "w:2026-12:inbound_answered": 9,  # the changelog had lost some: the database's
        "w:2026-12:llm_tokens": 500,  # the table is ahead (not copied yet): kept
        "other": 3,
        "w:2026-12-01:x": 2,  # lost entirely: back from the database
    }
    assert raise_counters(table, {"w:2026-12:inbound_answered": 9}) == 0


def test_stats_documents_are_merged_only_where_the_database_has_more() -> None:
    mine = {"folded": 3, "conversations": {"opened": 2, "closed": 0}}
    stored = {"folded": 5, "conversations": {"opened": 3, "closed": 1}}
    table = {"a": mine, "b": dict(stored)}
    assert raise_stats(table, {"a": stored, "b": stored, "c": stored}) == 2
    assert table["a"] == stored and table["c"] == stored and table["b"] == stored
    assert raise_stats(table, {"a": mine}) == 0  # an older copy changes nothing


def test_month_bounds_are_utc_months() -> None:
    assert month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    brt = timezone(timedelta(hours=-3))  # still November in Brasília, December in UTC
    assert month_bounds(datetime(2026, 11, 30, 22, 0, tzinfo=brt))[0] == datetime(
        2026, 12, 1, tzinfo=UTC
    )


def test_a_worker_seeds_only_the_workspaces_of_its_partitions() -> None:
    ids = [uuid.uuid4() for _ in range(200)]
    mine = owned(ids, {0, 2}, 4)
    assert mine and len(mine) < len(ids)
    assert all(workspace_partition(w, 4) in (0, 2) for w in mine)
    assert set(mine) | set(owned(ids, {1, 3}, 4)) == set(ids)
