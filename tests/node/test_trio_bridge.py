"""The trio thread bridge: how its thread ended, and calls that come as it closes."""

from __future__ import annotations

import asyncio
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


async def test_a_call_while_the_work_nursery_is_closed_by_a_failed_task_is_host_closed() -> None:
    """A task that fails closes the work nursery while the service still exits: a call that
    comes then is refused HostClosed, not started there (which killed trio with an internal
    error, and left the caller waiting for good)."""

    async def fails() -> None:
        raise ValueError("a task of the work nursery failed")

    async def answer() -> int:
        return 42

    bridge = TrioThread(name="test-closing")
    async with asyncio.timeout(10):
        await bridge.start(_slow_to_exit)
        bridge.run_sync_soon(bridge.spawn, fails)
        await asyncio.sleep(0.2)  # the failure has closed the nursery; the service still exits
        with pytest.raises(HostClosed):
            await bridge.run(answer)
        with pytest.raises(P2PError) as failed:
            await bridge.stop()
        assert "a task of the work nursery failed" in repr(failed.value.__cause__)
