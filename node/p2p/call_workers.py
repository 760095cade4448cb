"""The event loop's calls into trio, started by a trio task already waiting for them
(ARCHITECTURE §5, issue #13).

Through `TrioToken.run_sync_soon`, a call costs trio two scheduler passes before its first
step: epoll wakes trio's entry-queue task, whose callback starts a task for the call, and that
task's first step comes in the next pass, after another `epoll_wait(0)`: a system call that
lets the GIL go, which the loop's thread, back from its own wake-up write, takes for its whole
iteration. And a task is built per call.

Here one worker task, the leader, waits on a socket of its own. `submit` queues a call and
writes a byte (only the first since the leader last looked), so epoll wakes the leader itself,
and it runs the call in that same pass: it first hands every other call waiting to an idle
worker (or a new one) and the wait itself to the next, which start in the next pass as a
task per call did. A worker whose call has ended parks, up to `MAX_IDLE`, or ends. Plain
functions (`submit_sync`) ride the same queue and run in order as the leader takes them, so
a function queued before a call has run before the call's first step, as in trio's entry
queue.

State: the queue and the wake-up flag are written by the loop's thread and the trio thread
(single deque operations and a flag, the pattern of `TrioThread._to_loop`); the workers, the
leadership and the idle list are the trio thread's.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import outcome
import trio

from hearthmesh.node.p2p.errors import HostClosed

__all__ = ["MAX_IDLE", "CallWorkers"]

MAX_IDLE: Final = 16
"""Workers kept parked once their call ends; more calls at once start more, which then end."""

Job = Callable[[], Awaitable[None]]
"""A call: settles its caller itself, whatever happens (`TrioThread.run`'s task)."""


class _Lead:
    """Handed to a worker: take over the wait for calls."""


_LEAD: Final = _Lead()


class _Sync:
    """A plain function queued among the calls."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args


class CallWorkers:
    """Worker tasks in one trio run that start the loop's calls (module docstring)."""

    def __init__(self) -> None:
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._queue: deque[tuple[Job, Callable[[], None]] | _Sync] = deque()
        self._wake_due = False
        """A byte is on its way to the leader: a call queued now needs no other."""
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._idle: list[trio.lowlevel.Task] = []

    def start(self, nursery: trio.Nursery) -> None:
        """On the trio thread: start the first leader in `nursery` (its cancel ends them all)."""
        self._nursery = nursery
        nursery.start_soon(self._work, _LEAD)

    def submit(self, job: Job, refuse: Callable[[], None]) -> None:
        """From any thread: run `job` on a worker; `refuse()` (on the trio thread) is called
        instead if the workers close before it starts.

        Raises:
            HostClosed: closed already (nothing was queued).
        """
        self._put((job, refuse))

    def submit_sync(self, fn: Callable[..., Any], *args: Any) -> None:
        """From any thread: call `fn(*args)` on the trio thread, in order with the calls.

        Raises:
            HostClosed: closed already.
        """
        self._put(_Sync(fn, args))

    def _put(self, item: tuple[Job, Callable[[], None]] | _Sync) -> None:
        if self._closed:
            raise HostClosed("trio thread is stopping")
        self._queue.append(item)
        if self._closed:  # closed meanwhile: `close` may have swept before the append
            self._sweep()
            return
        if not self._wake_due:
            self._wake_due = True
            with contextlib.suppress(BlockingIOError, OSError):  # full: a byte is there
                self._wake_write.send(b"\0")

    def close(self) -> None:
        """On the trio thread, as the run stops: refuse every call not started; take no more.
        The workers end with the nursery's cancel."""
        self._closed = True
        self._sweep()

    def close_sockets(self) -> None:
        """Once no worker is left (the nursery has exited)."""
        self._wake_read.close()
        self._wake_write.close()

    def _sweep(self) -> None:
        while self._queue:
            try:
                item = self._queue.popleft()
            except IndexError:  # the other thread's sweep took it
                return
            if not isinstance(item, _Sync):
                item[1]()

    async def _work(self, first: Job | _Lead) -> None:
        """One worker: lead or run what it was handed, then park, lead or end."""
        todo: Job | _Lead | None = first
        while todo is not None:
            if isinstance(todo, _Lead):
                todo = await self._lead()
            await todo()
            todo = await self._park()

    async def _lead(self) -> Job:
        """Wait for calls; keep the first, hand out the rest and the wait; run plain
        functions in their place in the queue."""
        while True:
            self._wake_due = False  # before looking: a call queued after the look wakes us
            mine = self._take_queued()
            if mine is not None:
                return mine
            await trio.lowlevel.wait_readable(self._wake_read.fileno())
            with contextlib.suppress(BlockingIOError):
                self._wake_read.recv(64)

    def _take_queued(self) -> Job | None:
        mine: tuple[Job, Callable[[], None]] | None = None
        if self._closed:  # stopping: what is queued is refused, not started
            self._sweep()
            return None
        try:
            while self._queue:
                try:
                    item = self._queue.popleft()
                except IndexError:  # a late `_put`'s sweep took it
                    break
                if isinstance(item, _Sync):
                    item.fn(*item.args)
                elif mine is None:
                    mine = item
                else:
                    self._hand(item[0])
        except BaseException:
            if mine is not None:  # not started: `close` refuses it
                self._queue.appendleft(mine)
            raise
        if mine is None:
            return None
        self._hand(_LEAD)
        return mine[0]

    def _hand(self, todo: Job | _Lead) -> None:
        """To a parked worker, else to a new one (next pass either way)."""
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop(), outcome.Value(todo))
            return
        nursery = self._nursery
        assert nursery is not None
        nursery.start_soon(self._work, todo)

    async def _park(self) -> Job | _Lead | None:
        """Wait to be handed work; None (end) when enough workers are parked already."""
        if len(self._idle) >= MAX_IDLE or self._closed:
            return None
        task = trio.lowlevel.current_task()
        self._idle.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        handed: Job | _Lead = await trio.lowlevel.wait_task_rescheduled(abort)
        return handed
