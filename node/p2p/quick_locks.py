"""py-libp2p's per-write and per-read trio locks, taken without a scheduler pass when free.

An uncontended `trio.Lock.acquire` is a checkpoint: the task yields, and trio's next pass
polls epoll first (`epoll_wait` with no timeout, a system call that lets the GIL go, so the
node's event loop may take it for its whole iteration). py-libp2p 0.8.1 takes a lock at every
layer: one 200-byte frame written on a stream passed 7 schedule points (the `NetStream` state
lock, our whole-write lock, yamux's stream write lock and window lock, the connection's frame
lock, the TCP stream's write lock, the socket's send) and one read about 5, so an echo round
trip between two hosts took 22.5 task steps and 18 zero-timeout epoll polls on each host
(counted with a trio `Instrument`). None of those locks is ever contended on the
one-batch-in-flight deliver path.

`QuickLock` takes the place of a `trio.Lock` (or a `trio.Semaphore(1)`): a free one is taken
at once, after `checkpoint_if_cancelled` (so a cancelled task still stops here); a held one
is waited for in FIFO order, as trio's (a released lock passes straight to its first waiter,
so a free lock has none). The socket's own send and receive still checkpoint, so no task
loops without yielding. `quicken_stream` and `quicken_connection` swap the locks of one
stream and one yamux connection in place; the host calls them as a stream or connection is
added, when a lock may be held (a connection's reader waits in its TCP read under one), so a
lock swapped while held is waited for by the new one's first holder.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.rw_lock import ReadWriteLock
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

__all__ = ["QuickLock", "quicken_connection", "quicken_stream"]


class _TrioLock(Protocol):
    def acquire_nowait(self) -> None: ...
    async def acquire(self) -> None: ...
    def release(self) -> None: ...


class QuickLock:
    """A mutex for trio tasks whose free acquire does not yield (module docstring).

    Its own state, not a `trio.Lock`'s: trio's free acquire and release register the owner as
    the lot's breaker and check it, about 20 Python calls a pair, and the deliver path takes
    12-13 pairs a message. What that drops is trio's diagnosis of misuse (a release by another
    task, a task ending while it holds the lock, which then waits forever instead of raising
    `BrokenResourceError`); py-libp2p takes these locks in `async with` or try/finally. Like a
    `trio.Semaphore(1)`, any task may release it (py-libp2p's read-write lock lets the last
    reader release what the first took)."""

    __slots__ = ("_before", "_held", "_lot", "_waiting")

    def __init__(self, before: _TrioLock | None = None) -> None:
        self._held = False
        self._waiting = 0
        """Tasks parked in `_lot`, or woken from it and not yet run (a release asks the lot)."""
        self._lot = trio.lowlevel.ParkingLot()
        self._before = before
        """The lock this one replaced while a task held it (`_quicken`): the first task to take
        this one also waits for that one to be let go, so the two holders never overlap."""

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._held:
            self._waiting += 1
            try:
                await self._lot.park()  # `release` hands the lock straight to its first waiter
            finally:
                self._waiting -= 1
        else:
            self._held = True
        if self._before is not None:
            await self._wait_for_before()

    __aenter__ = acquire

    async def _wait_for_before(self) -> None:
        before = self._before
        assert before is not None
        try:
            await before.acquire()
        except BaseException:
            self.release()
            raise
        before.release()
        self._before = None

    def acquire_nowait(self) -> None:
        """Take the lock if it is free; `trio.WouldBlock` if not."""
        if self._held:
            raise trio.WouldBlock
        if self._before is not None:
            self._before.acquire_nowait()  # WouldBlock while its holder has it
            self._before.release()
            self._before = None
        self._held = True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release of a QuickLock that is not held")
        # A waiter cancelled meanwhile has left the lot (still counted until it runs): then
        # nobody is woken and the lock is free.
        if not (self._waiting and self._lot.unpark(count=1)):
            self._held = False

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


def _quicken(owner: Any, *names: str) -> None:
    for name in names:
        lock = getattr(owner, name, None)
        if isinstance(lock, trio.Lock):
            setattr(owner, name, QuickLock(lock if lock.locked() else None))
        elif isinstance(lock, trio.Semaphore) and lock.value <= 1:  # a mutex (`_writer_lock`)
            setattr(owner, name, QuickLock(lock if lock.value == 0 else None))


def quicken_stream(net_stream: Any) -> None:
    """Swap the locks a read or write of this stream takes (its `NetStream` and, for yamux,
    the muxed stream's)."""
    _quicken(net_stream, "_state_lock")
    muxed = getattr(net_stream, "muxed_stream", None)
    if isinstance(muxed, YamuxStream):
        _quicken(muxed, "window_lock")
        if isinstance(muxed.rw_lock, ReadWriteLock):
            _quicken(muxed.rw_lock, "_readers_lock", "_writer_lock")


def quicken_connection(muxed_conn: Any) -> None:
    """Swap the locks of a yamux connection's frame writes and stream table, and of its TCP
    stream's reads and writes (others are left as they are)."""
    if not isinstance(muxed_conn, Yamux):
        return
    _quicken(muxed_conn, "_write_lock", "streams_lock")
    noise = getattr(muxed_conn.secured_conn, "conn", None)
    packets = getattr(noise, "read_writer", None)
    raw = getattr(packets, "read_write_closer", None)
    tcp = getattr(raw, "stream", None)
    if isinstance(tcp, TrioTCPStream):
        _quicken(tcp, "read_lock", "write_lock")
