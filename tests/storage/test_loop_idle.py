"""LoopIdle: the in-place commit's idle rule, on asyncio's loop and uvloop's (ARCHITECTURE §10)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import cast

from hearthmesh.storage.loop_idle import LoopIdle

from .conftest import RunOn


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_ready_callback_makes_the_loop_busy(run_on: RunOn[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        idle = LoopIdle(loop)
        assert idle.known and idle()
        ran: list[int] = []
        loop.call_soon(ran.append, 1)
        assert not idle()
        await _turns(2)
        assert ran == [1] and idle()
        # Another thread's hand-back (the writer's, the trio bridge's) is ready work too.
        helper = threading.Thread(target=loop.call_soon_threadsafe, args=(ran.append, 2))
        helper.start()
        helper.join()
        assert not idle()
        await _turns(2)
        assert ran == [1, 2] and idle()

    run_on(main())


def test_a_readable_socket_makes_the_loop_busy_until_read(run_on: RunOn[None]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        idle = LoopIdle(loop)
        ours, peers = socket.socketpair()
        with ours, peers:
            ours.setblocking(False)
            got: list[bytes] = []
            read = asyncio.Event()

            def reader() -> None:
                got.append(ours.recv(64))
                read.set()

            loop.add_reader(ours.fileno(), reader)
            await _turns(2)  # libuv adds a watched descriptor to its poll at its next turn
            assert idle()
            peers.send(b"frame")  # arrived, and the loop has not polled since
            assert not idle()
            async with asyncio.timeout(5):
                await read.wait()
            assert got == [b"frame"] and idle()
            loop.remove_reader(ours.fileno())
            peers.send(b"unwatched")  # a descriptor the loop does not watch is not its work
            await _turns(2)
            assert idle()
        assert LoopIdle(loop, watch_io=False)()

    run_on(main())


def test_a_loop_without_a_ready_queue_is_never_idle() -> None:
    foreign = cast(asyncio.AbstractEventLoop, object())  # keeps its queue where we cannot look
    assert not LoopIdle(foreign).known
    assert not LoopIdle(foreign)()
