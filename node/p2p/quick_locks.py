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

`QuickLock` wraps a `trio.Lock` (or `trio.Semaphore`): a free one is taken at once, after
`checkpoint_if_cancelled` (so a cancelled task still stops here); a held one is waited for
as before, in trio's FIFO order (a released lock passes straight to its first waiter, so a
free lock has none). The socket's own send and receive still checkpoint, so no task loops
without yielding. `quicken_stream` and `quicken_connection` swap the locks of one stream and
one yamux connection in place; the host calls them as a stream or connection is added.
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
    """A trio lock or semaphore whose free acquire does not yield (module docstring)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: _TrioLock | None = None) -> None:
        self._lock: _TrioLock = trio.Lock() if lock is None else lock

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


def _quicken(owner: Any, *names: str) -> None:
    for name in names:
        lock = getattr(owner, name, None)
        if isinstance(lock, trio.Lock | trio.Semaphore):
            setattr(owner, name, QuickLock(lock))


def quicken_stream(net_stream: Any) -> None:
    """Swap the locks a read or write of this stream takes (its `NetStream` and, for yamux,
    the muxed stream's). A swapped lock wraps the same trio lock, so one held meanwhile is
    released as before."""
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
