"""Two rules for every py-libp2p yamux stream: receive credit returned in half-window steps,
as go-yamux does, and each write's frames kept together (SPEC §10.1). `adopt_yamux_stream`
installs both on one stream; the host calls it for every stream its swarm adds.

py-libp2p 0.8.1's yamux stream sends a WINDOW_UPDATE frame on almost every read of a small
frame (its `RELEASE_ON_READ` and "partial slack" rules), and it sends it *before* the read
returns. For our request/ack streams that is one more encrypted frame per message each way, on
the critical path of every delivery: the receiver writes an update before it can look at the
batch, and the sender's libp2p thread wakes to process it. Measured with two plain trio hosts
in two processes, 1 ms apart: round trip p50 0.87 to 0.90 ms with the per-read updates, 0.78
to 0.81 ms without.

The credit rule keeps the standard one instead: consumed
bytes are credited back to the peer once they reach half the target window (128 KiB at first),
so the sender never stalls (it may still have half a window in flight) and a small frame
costs no update at all; py-libp2p's window auto-tuning still grows the window of a bulk flow.
In-process `bench p2p`: round trip p50 from 1.62 to 1.72 ms down to 1.10 to 1.25 ms, frames/s
up 10 to 40 %. The host gives the rule to every stream its swarm adds, libp2p's own (kad-dht,
gossipsub, identify) included: a DHT walk for a user known nowhere cost 20-30 % less CPU.

Whole writes: py-libp2p 0.8.1's `YamuxStream.write` holds the stream's lock per frame, not per
write, and waits out a short send window between frames. A second writer on the stream then
puts its frames inside the first one's message. Gossipsub has such writers: its per-peer
sending loop and the direct writes that replay the message cache to a new subscriber (and
flush messages held for identify). With credit in half windows a write often meets a short
window, and a new subscriber's replay garbled the RPCs its reader decoded (two hosts in one
process, 2,000 cached 5 kB messages: garbled in 4 of 4 cycles; none with credit per read or
with whole writes). So one write's frames go out together, and a write that fails or is
cancelled (some of its frames may be out) resets the stream: the peer sees a reset, never a
message with another's bytes in it, or a later message after a cut-off one. Under that lock a
write that fits one frame and the send window needs no read-write lock of py-libp2p's, nor
its debug line (`_in_one_frame`); any other goes through py-libp2p's own write.

Liveness: `answers_ping` sends a yamux ping on a connection and waits for its pong, which the
peer's libp2p thread sends by itself (no stream, no handler): a connection that answers
carries bytes both ways, however slow the peer's application is (SPEC §11.5.2). Any bytes the
connection reads while the ping waits count as well (`watch_reads`): the peer's loop answers
a ping after the frames queued before it, and at 50 nodes on 2 cores (load 50-80) a pong
often took longer than the bound while gossip and acks still came in, so connections that
were slow, not dead, were closed by the thousand and the mesh fell apart.

Keepalive: py-libp2p pings from both ends of every connection every 30 s; a `LeanYamux`
pings from each end once as it starts and then from the dialer alone, when the connection
was quiet (`LeanYamux._measure_rtt_loop`): a node holds a connection to every home of its
groups, and at 50 nodes the pings were most of an idle node's frames (§20.6).
"""

from __future__ import annotations

import contextlib
import logging
import struct
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import trio
from libp2p.io.exceptions import IncompleteReadError
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError, MuxedStreamReset
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_SYN,
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_WINDOW_SIZE,
    RTT_MEASURE_INTERVAL,
    TYPE_DATA,
    TYPE_PING,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
    _yamux_data_read_timeout,
)

from hearthmesh.node.p2p.quick_locks import QuickLock

__all__ = [
    "RESET_AFTER_FAILED_WRITE_S",
    "LeanYamux",
    "adopt_yamux_stream",
    "answers_ping",
    "lean_frame_writes",
    "read_plain_frames_lean",
    "watch_reads",
]

RESET_AFTER_FAILED_WRITE_S: Final = 1.0
"""How long the reset after a failed write may wait for the connection (it shields a cancel)."""

_HEARD_POLL_S: Final = 0.25
"""How often a ping's wait looks whether the connection read anything meanwhile."""
_FIRST_PING_S: Final = 0.5
"""A connection's first ping, after its start (py-libp2p's delay)."""
_PONG_WAIT_S: Final = 10.0
"""How long a keepalive ping waits for its pong (py-libp2p's bound)."""


class _LastRead:
    """The trio time of a connection's last read from its peer (trio thread)."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


_last_read: weakref.WeakKeyDictionary[Any, _LastRead] = weakref.WeakKeyDictionary()
"""Yamux connection -> its last read, for those `watch_reads` watches."""

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(YAMUX_HEADER_FORMAT)


class LeanYamux(Yamux):
    """py-libp2p 0.8.1's yamux connection, whose plain DATA frames (no flags, on a stream it
    has) are read by a lean loop: `Yamux.handle_incoming` formats six debug lines per frame
    whether or not debug logging is on, and bounds each body's read with a deadline even when
    the body is already decrypted in hand. Every other frame (a stream's opening, FIN, RST,
    window updates, pings, GO_AWAY, a frame too large or for an unknown stream) goes to
    py-libp2p's own loop as before: the lean loop sits in the connection's reads, under it,
    and hands it only those frames' headers (and then their bodies). Same effect per frame:
    bytes into the stream's buffer, its receive window charged (clamped at 0 with a warning,
    as py-libp2p does), its reader woken. The host gives it to every yamux connection its
    swarm upgrades (`read_plain_frames_lean`); a peer's muxer can be anything that speaks
    yamux. Its streams' reads (`read_stream`) skip py-libp2p's debug lines too."""

    read_note: _LastRead | None = None
    """Set by `watch_reads`: each read of the connection notes its time here."""

    keepalive_s: float = RTT_MEASURE_INTERVAL
    """The dialer's ping interval on a quiet connection (py-libp2p's and go-yamux's 30 s)."""

    async def _measure_rtt_loop(self) -> None:
        """py-libp2p 0.8.1's RTT loop (`Yamux._measure_rtt_loop`), bounded: both ends pinged
        every connection every 30 s, so an idle node wrote two frames and read two per
        connection each 30 s, and it holds one to every home of its groups (at 50 nodes ~4
        writes and ~4 reads a second, where its gossip wrote 1; SPEC §20.6). Now each end pings
        once as the connection starts (the RTT its windows' tuning reads), and then the
        dialer alone, and only after `keepalive_s` in which it read nothing from the peer:
        one end's ping and pong keep a NAT's mapping and show a dead peer as well as both
        ends' did, and bytes from the peer show both. py-libp2p's loop closed nothing on a
        missing pong either (our liveness asks are `answers_ping`'s)."""
        await trio.sleep(_FIRST_PING_S)
        await answers_ping(self, _PONG_WAIT_S)
        if not self.is_initiator_value:
            return
        looked = trio.current_time()  # after our pong: our own ping's answer is not "heard"
        while not self.event_shutting_down.is_set():
            with trio.move_on_after(self.keepalive_s):
                await self.event_shutting_down.wait()
            note = self.read_note
            if note is None or note.at <= looked:
                await answers_ping(self, _PONG_WAIT_S)
            looked = trio.current_time()

    async def handle_incoming(self) -> None:
        secured = self.secured_conn
        secured.read = _plain_frames_apart(self, secured.read)  # type: ignore[assignment]
        await super().handle_incoming()

    async def read_stream(self, stream_id: int, n: int = -1) -> bytes:
        """py-libp2p 0.8.1's `Yamux.read_stream` without its debug lines: it formats 5 a
        read of a waiting stream (the peer id, the stream's flags), debug logging on or not.
        The same answers in the same order: what is buffered (up to `n`) unless a reset came
        before the stream's end, then the reset, the end, a stream closed, or a wait for the
        next frame."""
        if n is None:
            n = -1
        while True:
            async with self.streams_lock:
                stream = self.streams.get(stream_id)
                if stream is None:
                    raise MuxedStreamEOF("Stream closed")
                if self.event_shutting_down.is_set():
                    raise MuxedStreamEOF("Connection shut down")
                buffer = self.stream_buffers.get(stream_id)
                if buffer is None:
                    if stream.reset_received:
                        raise MuxedStreamReset("Stream was reset")
                    raise MuxedStreamEOF("Stream buffer closed")
                if buffer and (stream.recv_closed or not stream.reset_received):
                    data = bytes(buffer) if n == -1 or n >= len(buffer) else bytes(buffer[:n])
                    del buffer[: len(data)]
                    if stream.closed:  # drained: py-libp2p reclaims it here too
                        self._finalize_stream_locked(stream, fully_closed=True)
                    return data
                if stream.reset_received:
                    raise MuxedStreamReset("Stream was reset")
                if stream.recv_closed:
                    raise MuxedStreamEOF("Stream is closed for receiving")
                if stream.closed:
                    raise MuxedStreamReset("Stream is reset or closed")
            try:
                await self.stream_events[stream_id].wait()
                self.stream_events[stream_id] = trio.Event()
            except KeyError:
                raise MuxedStreamEOF("Stream was removed") from None


def read_plain_frames_lean(swarm: Any) -> None:
    """Make each yamux connection `swarm` upgrades a `LeanYamux`, before its muxer starts.
    py-libp2p 0.8.1 builds `Yamux` by name whatever class `muxer_opt` names, so the new
    connection's class is swapped (a subclass with no state of its own: nothing else
    changes)."""
    muxers = swarm.upgrader.muxer_multistream
    new_conn = muxers.new_conn

    async def new_lean_conn(conn: Any, peer_id: Any) -> Any:
        muxed = await new_conn(conn, peer_id)
        if type(muxed) is Yamux:
            muxed.__class__ = LeanYamux
        return muxed

    muxers.new_conn = new_lean_conn


def _plain_frames_apart(
    conn: LeanYamux, read: Callable[[int], Awaitable[bytes]]
) -> Callable[[int | None], Coroutine[Any, Any, bytes]]:
    """`read` of `conn`'s secured connection with its plain DATA frames taken out (installed
    before the first read, so it knows where each frame starts)."""
    owed = 0
    """Body bytes of a frame handed to py-libp2p, which it reads next."""

    async def read_noted(n: int) -> bytes:
        data = await read(n)
        note = conn.read_note
        if note is not None:
            note.at = trio.current_time()
        return data

    async def exactly(n: int) -> bytes:
        data = await read_noted(n)  # n at once, unless the connection ended
        while len(data) < n:
            more = await read_noted(n - len(data))
            if not more:
                raise IncompleteReadError(
                    f"connection ended inside a yamux frame: {len(data)} of {n} bytes",
                    expected_bytes=n,
                    received_bytes=len(data),
                )
            data += more
        return data

    async def body(length: int) -> bytes:
        secured = conn.secured_conn
        in_hand = getattr(secured, "high_watermark", 0) - getattr(secured, "low_watermark", 0)
        if length <= in_hand:  # decrypted already: no wait, so no deadline to set
            return await exactly(length)
        with trio.fail_after(_yamux_data_read_timeout()):  # py-libp2p's bound, kept
            return await exactly(length)

    async def filtered(n: int | None = None) -> bytes:
        nonlocal owed
        if owed or n != HEADER_SIZE or conn.event_shutting_down.is_set():
            data = await read_noted(n)  # type: ignore[arg-type]
            owed = max(0, owed - len(data))
            return data
        while True:
            header = await exactly(HEADER_SIZE)
            _, typ, flags, stream_id, length = _HEADER.unpack(header)
            plain = typ == TYPE_DATA and not flags and length <= MAX_WINDOW_SIZE
            if not plain or stream_id not in conn.streams:
                owed = length if typ == TYPE_DATA and length <= MAX_WINDOW_SIZE else 0
                return header
            data = await body(length) if length else b""
            async with conn.streams_lock:
                _deliver(conn, stream_id, data)

    return filtered


def _deliver(conn: Yamux, stream_id: int, data: bytes) -> None:
    """What py-libp2p does with a plain DATA frame's body (a stream gone meanwhile: dropped)."""
    stream, buffer = conn.streams.get(stream_id), conn.stream_buffers.get(stream_id)
    if stream is None or buffer is None:
        return
    buffer.extend(data)
    stream.recv_window -= len(data)
    if stream.recv_window < 0:
        log.warning("yamux stream %d: peer exceeded the receive window", stream_id)
        stream.recv_window = 0
    event = conn.stream_events.get(stream_id)
    if event is not None:
        event.set()
    if stream.closed:
        conn._finalize_stream_locked(stream, fully_closed=True)


def watch_reads(muxed_conn: Any) -> None:
    """Note the time of each read of a yamux connection from its peer (for `answers_ping`);
    once per connection, nothing for another muxer."""
    if not isinstance(muxed_conn, Yamux) or muxed_conn in _last_read:
        return
    if isinstance(muxed_conn, LeanYamux):  # its reads note themselves
        muxed_conn.read_note = _last_read[muxed_conn] = _LastRead(trio.current_time())
        return
    secured = muxed_conn.secured_conn
    read = secured.read
    # One object per connection, set in place by each read: no lookup on the read path, and
    # the session holds no reference to its muxer.
    last = _last_read[muxed_conn] = _LastRead(trio.current_time())

    async def read_noting(n: int | None = None) -> bytes:
        data = await read(n)
        last.at = trio.current_time()
        return data

    secured.read = read_noting  # type: ignore[method-assign]


def lean_frame_writes(muxed_conn: Any) -> None:
    """Write this yamux connection's frames without py-libp2p 0.8.1's per-frame extras: its
    `_write_frame` unpacks each header and formats a debug line whether or not debug logging
    is on, and ends with a checkpoint of its own right after the socket's send has made one
    (a second scheduler pass, and an epoll poll that lets the GIL go, per frame). Nothing for
    another muxer."""
    if not isinstance(muxed_conn, Yamux):
        return
    secured = muxed_conn.secured_conn

    async def write_frame(data: bytes) -> None:
        async with muxed_conn._write_lock:  # read at each write: `quick_locks` may swap it
            await secured.write(data)

    muxed_conn._write_frame = write_frame  # type: ignore[method-assign]


def _read_since(muxed_conn: Any, asked: float) -> bool:
    last = _last_read.get(muxed_conn)
    return last is not None and last.at > asked


async def answers_ping(muxed_conn: Any, timeout_s: float, heard_within_s: float = 0.0) -> bool:
    """Does this yamux connection answer a ping within `timeout_s`, or read anything from its
    peer meanwhile, or in the `heard_within_s` before (when `watch_reads` watches it)? False
    for another muxer.

    py-libp2p 0.8.1 pings for its RTT estimate and sets the connection's current
    `_ping_event` on any pong: ours is made current just before our ping. The connection's
    own keepalive (`LeanYamux._measure_rtt_loop`, on a quiet connection only) may replace it
    meanwhile, which makes this answer False: the caller's choice without the ping.
    """
    if not isinstance(muxed_conn, Yamux) or not muxed_conn.is_established:
        return False
    asked = trio.current_time()
    if _read_since(muxed_conn, asked - heard_within_s):
        return True  # heard lately: no ping, and py-libp2p's own ping event left as it was
    answered = trio.Event()
    muxed_conn._ping_event = answered
    muxed_conn._ping_id += 1
    header = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_PING, FLAG_SYN, 0, muxed_conn._ping_id)
    with trio.move_on_after(timeout_s), contextlib.suppress(Exception):
        await muxed_conn._write_frame(header)
        muxed_conn._ping_sent_time = trio.current_time()
        while not answered.is_set() and not _read_since(muxed_conn, asked):
            with trio.move_on_after(_HEARD_POLL_S):
                await answered.wait()
    return answered.is_set() or _read_since(muxed_conn, asked)


async def _credit_half_windows(self: YamuxStream, *, bytes_read: int = 0) -> None:
    async with self.window_lock:
        self._pending_recv_release += bytes_read
        credit = self._pending_recv_release
        if credit < self.target_recv_window // 2:
            return
        self._pending_recv_release = 0
        self.recv_window += credit
        # py-libp2p's own auto-tuning: updates that come fast (a bulk flow) double the window.
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        credit += self._apply_autotune_epoch(buffered)
    # Not under window_lock: an inbound WINDOW_UPDATE needs it while we write (py-libp2p).
    await self.send_window_update(credit)


async def _in_one_frame(stream: YamuxStream, data: bytes) -> bool:
    """py-libp2p 0.8.1's `YamuxStream.write` of `data` that fits one frame and the send window
    (True), without its debug line and read-write lock (`_whole_writes` holds a lock of its
    own for the whole write): the same checks and window charge under `window_lock`, the same
    frame. False, with nothing done, for any other write."""
    async with stream.window_lock:
        if stream.closed:
            raise MuxedStreamError("Stream is closed")
        size = len(data)
        if not 0 < size <= stream.send_window or size > MAX_MESSAGE_SIZE - HEADER_SIZE:
            return False
        stream.send_window -= size
        frame = _HEADER.pack(0, TYPE_DATA, 0, stream.stream_id, size) + data
    await stream.conn._write_frame(frame)
    return True


def _whole_writes(write: Any, stream: YamuxStream) -> Any:
    """`stream.write` with one lock held for the whole write (see the module docstring)."""
    lock = QuickLock()  # a free lock costs no scheduler pass (`quick_locks`)

    async def write_whole(data: bytes) -> None:
        async with lock:
            if stream.send_closed:
                await write(data)  # raises: closed for sending, so nothing of `data` goes out
                return
            try:
                if not await _in_one_frame(stream, data):
                    await write(data)
            except BaseException:
                # Frames of `data` may be out: nothing may follow them on this stream.
                stream.send_closed = True
                with trio.CancelScope(shield=True) as scope, contextlib.suppress(Exception):
                    scope.deadline = trio.current_time() + RESET_AFTER_FAILED_WRITE_S
                    await stream.reset()
                raise

    return write_whole


def adopt_yamux_stream(muxed_stream: Any) -> None:
    """Install both rules on `muxed_stream` if it is a yamux stream (others are left as they
    are). An instance attribute shadows each method for this stream only."""
    if isinstance(muxed_stream, YamuxStream):
        # The read paths call this hook by name after every read (py-libp2p 0.8.1).
        setattr(  # noqa: B010
            muxed_stream,
            "_auto_tune_and_send_window_update",
            types.MethodType(_credit_half_windows, muxed_stream),
        )
        setattr(muxed_stream, "write", _whole_writes(muxed_stream.write, muxed_stream))  # noqa: B010
