"""The trio bridge: how its run ended, calls that come as it closes, and a run that is a guest
on the event loop's thread (`on_loop`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from hearthmesh.node.p2p.bridge import TrioThread, _only_a_closing_race
from hearthmesh.node.p2p.errors import HostClosed, P2PError

CLOSED = RuntimeError("Nursery is closed to new arrivals")


def test_libp2p_taking_a_stream_while_it_closes_is_a_clean_stop() -> None:
    nested = ExceptionGroup("trio", [ExceptionGroup("libp2p", [CLOSED])])
    assert _only_a_closing_race(nested)


def test_any_other_failure_still_counts() -> None:
    assert not _only_a_closing_race(CLOSED)  # not from a nursery at all
    assert not _only_a_closing_race(ExceptionGroup("trio", [CLOSED, ValueError("boom")]))
    assert not _only_a_closing_race(ExceptionGroup("trio", [RuntimeError("other")]))


@asynccontextmanager
async def _slow_to_exit() -> AsyncIterator[None]:
    """A service whose exit takes a while, as libp2p's does under load."""
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(0.5)


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "on-loop"])
async def test_a_call_while_the_work_nursery_is_closed_by_a_failed_task_is_host_closed(
    on_loop: bool,
) -> None:
    """A task that fails closes the work nursery while the service still exits: a call that
    comes then is refused HostClosed, not started there (which killed trio with an internal
    error, and left the caller waiting for good)."""

    async def fails() -> None:
        raise ValueError("a task of the work nursery failed")

    async def answer() -> int:
        return 42

    bridge = TrioThread(name="test-closing", on_loop=on_loop)
    async with asyncio.timeout(10):
        await bridge.start(_slow_to_exit)
        bridge.run_sync_soon(bridge.spawn, fails)
        await asyncio.sleep(0.2)  # the failure has closed the nursery; the service still exits
        with pytest.raises(HostClosed):
            await bridge.run(answer)
        with pytest.raises(P2PError) as failed:
            await bridge.stop()
        assert "a task of the work nursery failed" in repr(failed.value.__cause__)


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def test_on_loop_runs_trio_on_the_loops_thread_and_a_second_run_in_a_thread() -> None:
    async def thread_of_the_call() -> int:
        return threading.get_ident()

    first = TrioThread(name="test-guest", on_loop=True)
    second = TrioThread(name="test-second", on_loop=True)  # this thread runs one already
    async with asyncio.timeout(10):
        await first.start(_nothing)
        await second.start(_nothing)
        try:
            assert await first.run(thread_of_the_call) == threading.get_ident()
            assert await second.run(thread_of_the_call) != threading.get_ident()
        finally:
            await second.stop()
            await first.stop()
        again = TrioThread(name="test-again", on_loop=True)  # the thread is free again
        await again.start(_nothing)
        assert await again.run(thread_of_the_call) == threading.get_ident()
        await again.stop()


async def test_on_loop_a_cancelled_call_unwinds_its_trio_task_before_it_returns() -> None:
    unwound = False

    async def forever() -> None:
        nonlocal unwound
        try:
            await trio.sleep_forever()
        finally:
            unwound = True

    bridge = TrioThread(name="test-cancel", on_loop=True)
    async with asyncio.timeout(10):
        await bridge.start(_nothing)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await bridge.run(forever)
        assert unwound
        await bridge.stop()
