"""streams.inline: a coroutine's first step in place, the rest awaited as the coroutine."""

from __future__ import annotations

import asyncio

import pytest

from streams import inline


async def test_a_coroutine_that_never_waits_finishes_in_place() -> None:
    seen: list[str] = []

    async def deliver() -> None:
        seen.append("delivered")

    assert inline.start(deliver()) is None
    assert seen == ["delivered"]


async def test_an_error_in_the_first_step_propagates() -> None:
    async def broken() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        inline.start(broken())


async def test_a_blocked_coroutine_resumes_when_its_future_is_done() -> None:
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("waiting")
        await room
        await asyncio.sleep(0)  # a bare yield is handed to the task as well
        steps.append("delivered")
        return "ok"

    rest = inline.start(deliver())
    assert rest is not None and steps == ["waiting"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    room.set_result(None)
    assert await task == "ok"
    assert steps == ["waiting", "delivered"]


async def test_cancelling_the_rest_cancels_the_coroutine() -> None:
    never = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def deliver() -> None:
        try:
            await never
        finally:
            cleaned.append(True)

    rest = inline.start(deliver())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
    assert never.cancelled()  # the task cancelled what the coroutine waited on
