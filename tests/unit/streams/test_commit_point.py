"""Which acked offsets a commit may move over (streams/transport.py)."""

from __future__ import annotations

from streams.transport import commit_point


def test_a_run_from_the_committed_offset_is_committed() -> None:
    acked = [12, 10, 11, 14]
    assert commit_point(acked, 10) == [10, 11, 12]
    assert acked == [10, 11, 12, 14]  # sorted in place; the caller removes the run


def test_the_record_at_the_committed_offset_not_done_holds_the_commit() -> None:
    # faust committed past offset 10 here (it only looked for a head gap of 2 or more)
    assert commit_point([11, 12, 13], 10) == []
    assert commit_point([12, 13], 10) == []


def test_without_a_committed_offset_the_first_run_is_taken() -> None:
    assert commit_point([0, 1, 2, 5], None) == [0, 1, 2]
    assert commit_point([], None) == []
