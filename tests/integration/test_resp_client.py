"""The gateway's pipelined RESP client against the session's real Redis."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from gateway.resp import RespClient, RespError, pack
from omnichat.embedded import EmbeddedRedis, free_port
from tests.conftest import Stack


def test_pack_is_resp_bulk_strings() -> None:
    assert pack("MGET", "a", b"\xc3\xa9", 7) == (
        b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\n\xc3\xa9\r\n$1\r\n7\r\n"
    )


async def test_replies_match_their_commands_when_pipelined(stack: Stack) -> None:
    client = RespClient(stack.redis.url)
    try:
        keys = [f"resp-test:{uuid.uuid4()}" for _ in range(50)]
        sets = [client.command("SET", k, f"v{i}", "EX", 60) for i, k in enumerate(keys)]
        assert await asyncio.gather(*sets) == [b"OK"] * 50
        gets = [client.command("GET", k) for k in keys]  # written back to back, one connection
        assert await asyncio.gather(*gets) == [f"v{i}".encode() for i in range(50)]
        assert await client.command("MGET", keys[0], "resp-test:missing") == [b"v0", None]
        assert await client.command("EVAL", "return #KEYS", 2, "a", "b") == 2
    finally:
        await client.close()


async def test_an_error_reply_fails_only_its_command(stack: Stack) -> None:
    client = RespClient(stack.redis.url)
    try:
        bad = client.command("NOSUCHCOMMAND")
        good = client.command("PING")
        results = await asyncio.gather(bad, good, return_exceptions=True)
        assert isinstance(results[0], RespError) and "unknown command" in str(results[0]).lower()
        assert results[1] == b"PONG"
    finally:
        await client.close()


async def test_a_command_abandoned_by_its_caller_does_not_shift_the_replies(
    stack: Stack,
) -> None:
    client = RespClient(stack.redis.url)
    try:
        assert await client.command("PING") == b"PONG"  # connected
        slow = asyncio.ensure_future(client.command("ECHO", "abandoned"))
        await asyncio.sleep(0)  # written, waiting for its reply
        slow.cancel()  # the reply still comes, and must be dropped, not given to the next
        assert await client.command("ECHO", "mine") == b"mine"
    finally:
        await client.close()


async def test_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedRedis(tmp_path / "r", port=port).start()
    client = RespClient(server.url)
    try:
        assert await client.command("PING") == b"PONG"
        server.stop()
        with pytest.raises((ConnectionError, OSError)):
            await asyncio.wait_for(client.command("PING"), 2.0)
        server = EmbeddedRedis(tmp_path / "r", port=port).start()
        assert await client.command("PING") == b"PONG"
    finally:
        await client.close()
        server.stop()


async def test_unreachable_server_fails_fast() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    with pytest.raises((ConnectionError, OSError)):
        await client.command("PING")
