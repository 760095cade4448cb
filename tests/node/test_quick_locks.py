"""`QuickLock` (node/p2p/quick_locks.py): a free lock is taken without a scheduler pass, a
held one is waited for in order, a cancelled task still stops, a waiter cancelled leaves it
free, and a lock swapped while held keeps its holder alone; and on real hosts an echo
round trip takes fewer task steps with py-libp2p's locks swapped, and one fewer per frame
with `lean_frame_writes` (node/p2p/yamux.py)."""

from __future__ import annotations

import asyncio
import os
import statistics
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from libp2p.stream_muxer.yamux.yamux import Yamux

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.node.p2p.quick_locks import QuickLock, quicken_stream

ECHO = "/hearthmesh/test-echo/1"


async def _others_run_while(take: QuickLock | trio.Lock, times: int) -> int:
    """How many steps another task took while this one took and let go of `take` `times`
    times (the lock always free)."""
    steps = 0

    async def other() -> None:
        nonlocal steps
        while True:
            steps += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()  # the other task is running
        before = steps
        for _ in range(times):
            async with take:
                pass
        ran = steps - before
        nursery.cancel_scope.cancel()
    return ran


def test_a_free_lock_is_taken_without_letting_another_task_run() -> None:
    assert trio.run(_others_run_while, QuickLock(), 50) == 0
    # trio's own lock lets it run at each acquire (trio orders each batch at random: 49-51)
    assert trio.run(_others_run_while, trio.Lock(), 50) >= 45


def test_a_held_lock_is_waited_for_in_order() -> None:
    async def main() -> list[str]:
        lock = QuickLock()
        order: list[str] = []

        async def waiter(name: str) -> None:
            async with lock:
                order.append(name)

        async with trio.open_nursery() as nursery:
            await lock.acquire()
            nursery.start_soon(waiter, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(waiter, "second")
            await trio.testing.wait_all_tasks_blocked()
            assert order == []
            lock.release()
        return order

    assert trio.run(main) == ["first", "second"]


def test_a_cancelled_task_stops_at_a_free_lock() -> None:
    async def main() -> bool:
        lock = QuickLock()
        with trio.CancelScope() as scope:
            scope.cancel()
            await lock.acquire()
        lock.acquire_nowait()  # the cancelled acquire took nothing
        return scope.cancelled_caught

    assert trio.run(main)


def test_a_waiter_cancelled_before_it_runs_leaves_the_lock_free() -> None:
    async def main() -> None:
        lock = QuickLock()
        await lock.acquire()
        waiting = trio.CancelScope()

        async def waiter() -> None:
            with waiting:
                await lock.acquire()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            waiting.cancel()  # it leaves the lot now, and runs later
            lock.release()
            lock.acquire_nowait()  # nobody took it: free (WouldBlock if handed to no one)
            lock.release()

    trio.run(main)


def test_a_lock_swapped_while_held_is_taken_only_once_its_holder_lets_go() -> None:
    async def main() -> list[str]:
        stream = types.SimpleNamespace(_state_lock=trio.Lock())
        old = stream._state_lock
        let_go = trio.Event()
        order: list[str] = []

        async def holder() -> None:
            async with old:  # taken before the swap, let go after it
                await let_go.wait()
                order.append("holder")

        async def taker() -> None:
            async with stream._state_lock:
                order.append("taker")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            quicken_stream(stream)
            assert isinstance(stream._state_lock, QuickLock)
            nursery.start_soon(taker)
            await trio.testing.wait_all_tasks_blocked()
            assert order == []
            let_go.set()
        return order

    assert trio.run(main) == ["holder", "taker"]


class _Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


async def _echo(stream: FrameStream) -> None:
    async for frame in stream:
        await stream.write_frame(frame)


async def _steps_per_round_trip(host: P2PHost, stream: FrameStream, rounds: int = 40) -> int:
    """Trio task steps on `host` in a typical echo round trip of a 200-byte frame on `stream`:
    the median of `rounds` counted one by one. Not their mean: the host's timed tasks (yamux's
    RTT ping 0.5 s after the connection, the 1 s peer reconcile, gossipsub's heartbeat) add
    their steps to whichever round trips they fall in, more of them the longer the rounds take
    (the rounds 30 ms apart: the ping's 17 steps in one of 40 lean round trips, the others
    7-9)."""
    counted = _Steps()

    async def watch() -> None:
        trio.lowlevel.add_instrument(counted)

    async def unwatch() -> None:
        trio.lowlevel.remove_instrument(counted)

    payload = os.urandom(200)
    for _ in range(5):  # the stream's first frames (multistream) are behind us
        await stream.write_frame(payload)
        assert await stream.read_frame() == payload
    await host._bridge.run(watch)
    try:
        steps = []
        for _ in range(rounds):
            before = counted.steps
            await stream.write_frame(payload)
            assert await stream.read_frame() == payload
            steps.append(counted.steps - before)
        return statistics.median_low(steps)
    finally:
        await host._bridge.run(unwatch)


@asynccontextmanager
async def _echo_stream(seed: int) -> AsyncIterator[tuple[P2PHost, FrameStream]]:
    """Host a's stream to host b's echo handler (two real hosts, seeds `seed` and `seed + 1`).
    Without AutoNAT rounds: 0.5 s after the connection, a's round asks b to dial it back, and
    that connection's ~290 steps on a fell in the first 40 round trips of a slow run (a mean
    of 15.3 and 16.3 steps a round trip, over the 8 of a quiet one, in two suites under load)."""
    async with (
        asyncio.timeout(10),
        P2PHost(HostConfig(identity_seed=bytes([seed]) * 32, autonat_checks=False)) as a,
        P2PHost(HostConfig(identity_seed=bytes([seed + 1]) * 32, autonat_checks=False)) as b,
    ):
        await a.connect(b.listen_addrs[0])
        b.set_stream_handler(ECHO, _echo)
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            yield a, stream


@pytest.mark.integration
async def test_an_echo_between_real_hosts_takes_few_trio_steps() -> None:
    async with _echo_stream(0x51) as (a, stream):
        per_round_trip = await _steps_per_round_trip(a, stream)
        # A write and a read on the sending host: 22 steps with py-libp2p's own locks, 8 here.
        assert per_round_trip < 14


@pytest.mark.integration
async def test_a_lean_frame_write_saves_a_scheduler_pass_per_frame() -> None:
    async with _echo_stream(0x53) as (a, stream):
        muxed = stream._raw._stream.muxed_stream.conn  # type: ignore[attr-defined]
        assert isinstance(muxed, Yamux)
        assert "_write_frame" in vars(muxed)  # `lean_frame_writes` installed it
        lean = await _steps_per_round_trip(a, stream)
        del muxed._write_frame  # py-libp2p's own again
        plain = await _steps_per_round_trip(a, stream)
        assert lean < plain  # one frame written per round trip: one pass fewer (8 and 9)
