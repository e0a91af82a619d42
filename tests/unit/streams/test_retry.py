"""What counts as transient: the database or broker away, never the data itself."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RequestTimedOutError
from psycopg_pool import PoolTimeout
from pydantic_core import PydanticSerializationError

from streams.retry import is_transient, with_retry

TRANSIENT = [
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.errors.AdminShutdown("terminating connection"),
    psycopg.errors.SerializationFailure("could not serialize access"),
    PoolTimeout("couldn't get a connection"),
    KafkaConnectionError("broker away"),
    RequestTimedOutError(),
    ConnectionResetError(),
    TimeoutError(),
]
DATA = [
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
    psycopg.errors.InvalidTextRepresentation("invalid input syntax for type json"),
    psycopg.errors.NumericValueOutOfRange("bigint out of range"),
    # An OperationalError subclass, but the row is too large for its index every time.
    psycopg.errors.ProgramLimitExceeded("index row requires 10016 bytes"),
    MessageSizeTooLargeError(),
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    PydanticSerializationError("Error serializing to JSON"),
    ValueError("a bug"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", DATA, ids=lambda e: type(e).__name__)
def test_the_data_is_never_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


async def test_with_retry_retries_the_transient_only() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise psycopg.OperationalError("away")
        return "done"

    assert await with_retry("t", flaky, first_delay=0.001) == "done" and calls == 3

    async def too_large() -> None:
        nonlocal calls
        calls += 1
        raise psycopg.errors.ProgramLimitExceeded("index row requires 10016 bytes")

    calls = 0
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        await asyncio.wait_for(with_retry("t", too_large, first_delay=0.001), 5)
    assert calls == 1
