"""The loop's calls into a trio run in a thread of its own, started by worker tasks waiting for
them (`node/p2p/call_workers.py`): fewer scheduler passes, the same behaviour as a task per
call (answers, order with plain functions, cancellation, refusal at stop)."""

from __future__ import annotations

import asyncio
import statistics
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from hearthmesh.node.p2p.bridge import TrioThread
from hearthmesh.node.p2p.call_workers import MAX_IDLE
from hearthmesh.node.p2p.errors import HostClosed, P2PError


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


@asynccontextmanager
async def _running(name: str) -> AsyncIterator[TrioThread]:
    bridge = TrioThread(name=name)
    async with asyncio.timeout(20):
        await bridge.start(_nothing)
        try:
            yield bridge
        finally:
            await bridge.stop()


class _Polls(trio.abc.Instrument):
    """trio's waits for I/O: one per scheduler pass."""

    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


async def test_a_call_starts_in_the_pass_that_wakes_trio() -> None:
    """Through trio's entry queue a call's first step came a pass after trio woke (2 waits
    for I/O between the loop's call and it, at the median); a waiting worker runs it in the
    pass its wake-up starts (1: that wake-up's own wait, which trio may enter after the loop
    has looked)."""
    polls = _Polls()

    async def count_polls() -> None:
        trio.lowlevel.add_instrument(polls)

    async def polls_now() -> int:
        return polls.count

    async with _running("test-passes") as bridge:
        await bridge.run(count_polls)
        passes = []
        for _ in range(100):
            before = polls.count
            passes.append(await bridge.run(polls_now) - before)
    assert statistics.median(passes) <= 1


async def test_many_calls_at_once_each_get_their_own_answer_and_workers_stay_bounded() -> None:
    """More calls wait at once than workers park: each is answered with its own value, none
    waits for another, and once they end at most MAX_IDLE workers (and the one that waits for
    calls) are left."""
    calls = MAX_IDLE * 3
    release = trio.Event()
    started = 0

    async def held(n: int) -> int:
        nonlocal started
        started += 1
        if started == calls:
            release.set()
        await release.wait()  # every call is running at once before any returns
        return n * 2

    async def workers_left() -> int:
        nursery = bridge._nursery
        assert nursery is not None
        return len(nursery.child_tasks)

    async with _running("test-many") as bridge:
        answers = await asyncio.gather(*(bridge.run(held, n) for n in range(calls)))
        assert answers == [n * 2 for n in range(calls)]
        assert await bridge.run(workers_left) <= MAX_IDLE + 1


async def test_a_plain_function_queued_before_a_call_runs_before_it() -> None:
    """`run_sync_soon` and `run` share one queue, in order (as in trio's entry queue)."""
    seen: list[str] = []

    def plain(n: int) -> None:
        seen.append(f"plain {n}")

    async def call(n: int) -> None:
        seen.append(f"call {n}")

    async with _running("test-order") as bridge:
        for n in range(30):
            bridge.run_sync_soon(plain, n)
            await bridge.run(call, n)
    assert seen == [entry for n in range(30) for entry in (f"plain {n}", f"call {n}")]


async def test_a_cancelled_call_unwinds_its_trio_side_and_the_worker_serves_again() -> None:
    unwound = 0

    async def forever() -> None:
        nonlocal unwound
        try:
            await trio.sleep_forever()
        finally:
            unwound += 1

    async def answer() -> int:
        return 42

    async with _running("test-cancel") as bridge:
        for expected in (1, 2, 3):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await bridge.run(forever)
            assert unwound == expected
            assert await bridge.run(answer) == 42


async def test_calls_waiting_when_the_run_stops_are_refused_not_left_waiting() -> None:
    """Calls still queued or running as `stop()` ends the run each end: answered or
    HostClosed, none waits on; and a call after the stop is HostClosed at once."""

    async def slow(n: int) -> int:
        await trio.sleep(0.01 * (n % 5))
        return n

    bridge = TrioThread(name="test-stop")
    async with asyncio.timeout(20):
        await bridge.start(_nothing)
        pending = [asyncio.ensure_future(bridge.run(slow, n)) for n in range(60)]
        await asyncio.sleep(0)  # some are handed over, the rest still queued
        await bridge.stop()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(o == n or isinstance(o, HostClosed) for n, o in enumerate(outcomes))
        with pytest.raises(HostClosed):
            await bridge.run(slow, 1)


async def test_calls_queued_behind_a_function_that_ends_the_run_are_refused() -> None:
    """A plain function that raises ends the run (as one in trio's entry queue did); the calls
    queued behind it never start and are each refused HostClosed, not left waiting."""
    gate = threading.Event()

    def fails() -> None:
        raise ValueError("a plain function failed")

    async def answer() -> int:
        return 42

    bridge = TrioThread(name="test-fails")
    async with asyncio.timeout(10):
        await bridge.start(_nothing)
        bridge.run_sync_soon(gate.wait)  # trio's thread holds here while the rest queue
        bridge.run_sync_soon(fails)
        calls = [asyncio.ensure_future(bridge.run(answer)) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, HostClosed) for o in outcomes), outcomes
        with pytest.raises(P2PError):
            await bridge.stop()
