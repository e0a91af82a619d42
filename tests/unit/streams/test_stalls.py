"""streams.stalls.StallWatch: when the stall watchdog calls a partition stuck."""

from __future__ import annotations

from streams.stalls import StallWatch


def test_a_commit_standing_below_the_end_is_stuck_after_the_wait() -> None:
    watch: StallWatch[str] = StallWatch(30)
    assert watch.stuck([("a", 5, 9)], now=0) == []  # first seen: the clock starts
    assert watch.stuck([("a", 5, 9)], now=29) == []
    assert watch.stuck([("a", 5, 9)], now=30) == ["a"]


def test_a_moving_commit_starts_the_clock_again() -> None:
    watch: StallWatch[str] = StallWatch(30)
    watch.stuck([("a", 5, 9)], now=0)
    assert watch.stuck([("a", 6, 9)], now=25) == []  # moved: handled, just slow
    assert watch.stuck([("a", 6, 9)], now=50) == []
    assert watch.stuck([("a", 6, 9)], now=55) == ["a"]


def test_an_idle_partition_is_never_stuck() -> None:
    watch: StallWatch[str] = StallWatch(30)
    for now in (0, 100, 1000):
        # Committed at the end (the next offset to handle is the end), and an empty one.
        assert watch.stuck([("idle", 9, 9), ("empty", None, 0)], now=now) == []


def test_a_partition_never_committed_counts_from_its_start() -> None:
    watch: StallWatch[str] = StallWatch(30)
    watch.stuck([("new", None, 3)], now=0)
    assert watch.stuck([("new", None, 3)], now=31) == ["new"]


def test_an_unknown_end_is_skipped_and_clear_forgets_every_clock() -> None:
    watch: StallWatch[str] = StallWatch(30)
    watch.stuck([("a", 5, 9), ("b", 1, None)], now=0)
    assert watch.stuck([("a", 5, 9), ("b", 1, None)], now=40) == ["a"]
    watch.clear()  # after a seek the offsets mean something else
    assert watch.stuck([("a", 5, 9)], now=41) == []
    assert watch.stuck([("a", 5, 9)], now=71) == ["a"]


def test_caught_up_then_behind_again_starts_a_new_clock() -> None:
    watch: StallWatch[str] = StallWatch(30)
    watch.stuck([("a", 5, 9)], now=0)
    watch.stuck([("a", 9, 9)], now=10)  # caught up
    watch.stuck([("a", 9, 12)], now=20)  # new records arrive
    assert watch.stuck([("a", 9, 12)], now=45) == []
    assert watch.stuck([("a", 9, 12)], now=50) == ["a"]
