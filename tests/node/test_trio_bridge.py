"""The trio bridge: how its run ended, calls that come as it closes, and a run that is a guest
on the event loop's thread (`on_loop`)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio._core._wakeup_socketpair import WakeupSocketpair

from hearthmesh.node.p2p import guest_run
from hearthmesh.node.p2p.bridge import TrioThread, _only_a_closing_race
from hearthmesh.node.p2p.errors import HostClosed, P2PError
from tests.integration.conftest import wait_until
from tests.integration.netlab import NetLab, in_netns, require_netlab

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
        # the failure has closed the nursery; the service still exits (0.5 s)
        await wait_until(lambda: not bridge.running)
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


async def test_on_loop_a_run_started_in_another_network_namespace_stays_in_it() -> None:
    """A host started inside `in_netns` (the namespace tests) dials and listens in that
    namespace; a guest run would open its later sockets on the loop's thread, back in the
    process's namespace by then (a dial to the lab's addresses failed), so it takes a thread."""
    require_netlab()

    async def namespace_of_the_call() -> tuple[int, int]:
        found = os.stat("/proc/thread-self/ns/net")
        return found.st_dev, found.st_ino

    with NetLab() as lab:
        ns, _address = lab.public_host(1)
        wanted = os.stat(f"/var/run/netns/{ns}")
        bridge = TrioThread(name="test-netns", on_loop=True)
        async with asyncio.timeout(10):
            with in_netns(ns):
                await bridge.start(_nothing)
            try:
                assert await bridge.run(namespace_of_the_call) == (wanted.st_dev, wanted.st_ino)
            finally:
                await bridge.stop()


async def test_on_loop_a_call_from_the_loop_writes_nothing_to_trios_wake_up_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the loop's thread the call's trio task is started in place (`GuestRun.call_now`):
    no write to trio's wake-up socket, no wait for the loop's next poll to see it. Each call
    used to cost one write (a system call, and a loop iteration before trio saw it). Calls
    that find others waiting in trio's entry queue still go through it, in order."""
    writes = 0
    wake = WakeupSocketpair.wakeup_thread_and_signal_safe

    def counted(self: WakeupSocketpair) -> None:
        nonlocal writes
        writes += 1
        wake(self)

    monkeypatch.setattr(WakeupSocketpair, "wakeup_thread_and_signal_safe", counted)
    order: list[int] = []

    async def answer(n: int) -> int:
        await trio.lowlevel.checkpoint()
        return n

    def noted(n: int) -> None:
        order.append(n)

    async def noted_in_a_task(n: int) -> None:
        noted(n)

    bridge = TrioThread(name="test-in-place", on_loop=True)
    async with asyncio.timeout(10):
        await bridge.start(_nothing)
        try:
            await bridge.run(answer, 0)  # the run is settled: trio waits for I/O now
            before = writes
            assert [await bridge.run(answer, n) for n in range(20)] == list(range(20))
            assert writes == before
            for n in range(0, 20, 2):  # trio runs a batch's tasks in either order: 10 tries
                bridge.run_sync_soon(noted, n)  # waits in trio's entry queue: the call queues too
                await bridge.run(noted_in_a_task, n + 1)
            assert order == list(range(20))
        finally:
            await bridge.stop()


async def test_calls_the_trio_thread_hands_over_together_wake_the_loop_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each wake-up of the loop from the trio thread is a write to its pipe and a release of
    the GIL that the other thread takes: calls handed over while a wake-up is pending ride in
    it, and run in the order they were made."""
    loop = asyncio.get_running_loop()
    wakes = 0
    wake = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> asyncio.Handle:
        nonlocal wakes
        wakes += 1
        return wake(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    ran: list[int] = []
    bridge = TrioThread(name="test-drain")
    async with asyncio.timeout(10):
        await bridge.start(_nothing)
        try:
            handed = threading.Event()

            all_in = asyncio.Event()

            def hand_over(count: int) -> None:
                for n in range(count):
                    bridge.to_asyncio(ran.append, n)
                bridge.to_asyncio(all_in.set)
                handed.set()

            before = wakes
            bridge.run_sync_soon(hand_over, 50)
            # The loop is busy meanwhile (an idle one would take each call as it came).
            assert handed.wait(5)
            await all_in.wait()
            assert ran == list(range(50))
            assert wakes - before == 1
        finally:
            await bridge.stop()


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


async def test_on_loop_trio_waits_for_io_and_deadlines_in_the_loops_own_wait() -> None:
    """A guest run's socket reads, sleeps and calls from another thread all complete, and no
    other thread waits for trio's I/O meanwhile: the wait is the loop's (`guest_run`), not
    trio's helper thread, whose hand-over to the loop cost the cross-node path (ARCHITECTURE
    §5)."""

    async def echo_once() -> bytes:
        a, b = trio.socket.socketpair()
        with a, b:
            async with trio.open_nursery() as nursery:

                async def later() -> None:
                    await trio.sleep(0.02)  # only the deadline can wake the run here
                    await a.send(b"ping")

                nursery.start_soon(later)
                return await b.recv(10)  # the epoll descriptor wakes the run

    woke = asyncio.Event()
    loop = asyncio.get_running_loop()

    def from_a_thread(token: trio.lowlevel.TrioToken) -> None:
        token.run_sync_soon(loop.call_soon_threadsafe, woke.set)

    bridge = TrioThread(name="test-io", on_loop=True)
    async with asyncio.timeout(10):
        await bridge.start(_nothing)
        try:
            assert await bridge.run(echo_once) == b"ping"
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(bridge.run(trio.sleep, 0.1))
                await asyncio.sleep(0.03)  # trio waits for its deadline now
                assert _threads_in_trios_wait_for_io() == []
            token = await bridge.run(_token)
            other = threading.Thread(target=from_a_thread, args=(token,))
            other.start()
            other.join()
            await woke.wait()  # the run woke for the other thread's call
        finally:
            await bridge.stop()


def _threads_in_trios_wait_for_io() -> list[str]:
    """The threads whose stack is in trio's `get_events` (blocked in its epoll) right now."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return [
        names.get(ident, str(ident))
        for ident, frame in sys._current_frames().items()
        if any(
            f.f_code.co_name == "get_events" and "trio" in f.f_code.co_filename
            for f, _ in traceback.walk_stack(frame)
        )
    ]


async def _token() -> trio.lowlevel.TrioToken:
    return trio.lowlevel.current_trio_token()


async def test_on_loop_with_another_trio_than_the_one_written_for_runs_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def thread_of_the_call() -> int:
        return threading.get_ident()

    monkeypatch.setattr(guest_run, "WRITTEN_FOR_TRIO", "0.0.0")
    bridge = TrioThread(name="test-fallback", on_loop=True)
    async with asyncio.timeout(10):
        await bridge.start(_nothing)
        try:
            assert await bridge.run(thread_of_the_call) != threading.get_ident()
        finally:
            await bridge.stop()


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "on-loop"])
async def test_a_cancelled_stop_still_ends_the_run_before_it_raises_cancelled(
    on_loop: bool,
) -> None:
    """Cancelling `stop()` (a node's stop under a timeout) must not leave trio running behind
    it: the cancellation is re-raised only once the run has ended (it was swallowed, and the
    guest run went on after `stop()` returned)."""
    bridge = TrioThread(name="test-cancelled-stop", on_loop=on_loop)
    async with asyncio.timeout(10):
        await bridge.start(_slow_to_exit)
        stopping = asyncio.create_task(bridge.stop())
        await asyncio.sleep(0.05)  # the service is exiting (0.5 s)
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        assert bridge._finished is not None and bridge._finished.done()
