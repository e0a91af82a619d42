"""How the journal stores a record's headers, and names a lane's lock."""

from __future__ import annotations

import uuid

from storage.journal import decode_headers, encode_headers, lane_lock_key


def test_headers_round_trip_any_bytes() -> None:
    headers = [("trace_id", b"abc"), ("key", "çã€".encode()), ("raw", bytes(range(256)))]
    assert decode_headers(encode_headers(headers)) == headers
    assert encode_headers([]) is None and decode_headers(None) == []


def test_a_lane_lock_is_a_signed_64_bit_key_of_its_uuid() -> None:
    lane = uuid.uuid4()
    key = lane_lock_key(lane)
    assert key == lane_lock_key(uuid.UUID(str(lane)))
    assert -(2**63) <= key < 2**63
    assert lane_lock_key(uuid.uuid4()) != key
