"""`FrameStream`: the asyncio view of one libp2p stream, with buffered length-prefixed frames.

The bytes live on the trio thread; each call here is one bridge hop (~0.1 ms) that reads a whole
chunk (up to `READ_CHUNK_BYTES`) or writes a whole buffer, and `FrameDecoder` splits chunks into
frames on the asyncio side. So a burst of small frames costs one hop per chunk, not per frame,
and a request and its answer (`write_then_read`: a DELIVER batch and its ACK) cost one hop.

End of stream: `read_frame()` raises `StreamClosed` at a clean EOF (the peer closed at a frame
boundary), because an empty frame `b""` is a valid payload and cannot double as EOF.
`async for frame in stream` ends quietly at a clean EOF. EOF in the middle of a frame raises
`StreamCutOff`, a `StreamClosed`: the peer went away mid-write, which is no breach (SPEC
§10.2). A frame longer than `max_frame_bytes` raises `TooLarge` and resets the stream (a
length-prefixed stream cannot resynchronise).

Inbound streams carry `ReadLimits` (SPEC §10.4): a frame that did not arrive whole reserves
its declared size from a budget shared by all inbound streams before the rest is read (none
left: reset, `Busy`); a frame begun must be complete within the frame timeout (else reset,
`FrameTimeout`, which the handler charges); a stream with no frame begun for the idle timeout
is reset (`StreamIdle`, a quiet end).

State: each `FrameStream` owns its decoder's buffer, the bytes it reserved from the shared
`ReadBudget`, and whether it ended; its reader and its writer (asyncio tasks, one each, behind
their locks) touch it, the raw stream's reads and writes run on the trio thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol

from hearthmesh.node.p2p.bridge import TrioThread
from hearthmesh.node.p2p.errors import HostClosed, StreamClosed, StreamCutOff, StreamIdle
from hearthmesh.protocol.errors import Busy, FrameTimeout, RemoteProtocolError, TooLarge
from hearthmesh.protocol.framing import MAX_FRAME_BYTES, FrameDecoder, encode_frame, encode_frames

__all__ = ["READ_CHUNK_BYTES", "FrameStream", "RawStream", "ReadBudget", "ReadLimits"]

log = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 64 * 1024
"""Largest read asked of the stream in one bridge hop."""


class RawStream(Protocol):
    """A byte stream whose coroutines must run on the trio thread (see `TrioThread.run`)."""

    async def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes`; `b""` at EOF. Raises `StreamClosed` on reset."""
        ...

    async def write(self, data: bytes) -> None:
        """All of `data`. Raises `StreamClosed` when the stream is gone."""
        ...

    async def close(self) -> None:
        """Close both directions gracefully (the peer reads EOF)."""
        ...

    async def reset(self) -> None:
        """Abort the stream (the peer sees a reset)."""
        ...


class ReadBudget(Protocol):
    """Bytes for partially read frames, shared by streams (`protocol.inbound.InboundLedger`)."""

    def reserve(self, peer: str, size: int) -> bool:
        """Take `size` bytes for `peer`; False (nothing taken) when there is no room."""
        ...

    def release(self, peer: str, size: int) -> None:
        """Give back bytes taken with `reserve`."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadLimits:
    """What bounds the reading of an inbound stream (SPEC §10.4)."""

    budget: ReadBudget
    frame_timeout_s: float
    """A frame begun must be complete within this time."""
    idle_timeout_s: float
    """No frame begun for this long ends the stream."""


class FrameStream:
    """Frames over one stream. One reader and one writer may run concurrently."""

    def __init__(
        self,
        *,
        raw: RawStream,
        bridge: TrioThread,
        remote_peer: str,
        protocol_id: str,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        limits: ReadLimits | None = None,
        path: str | None = None,
    ) -> None:
        self.remote_peer = remote_peer
        """Peer id (base58) at the other end."""
        self.protocol_id = protocol_id
        """The negotiated protocol."""
        self.path = path
        """How the stream's connection reaches the peer: "direct", "webrtc" or the relay's
        peer id (`P2PHost.peer_paths`' names); None when its host did not say."""
        self.max_frame_bytes = max_frame_bytes
        """Largest payload accepted or sent in one frame."""
        self._raw = raw
        self._bridge = bridge
        self._decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._eof = False
        self._closed = False
        self._limits = limits
        self._reserved = 0
        """Bytes of `limits.budget` held for the frame being read."""
        self._frame_began: float | None = None
        """Loop time when the partial frame's first bytes arrived (with `limits` only)."""

    @property
    def raw(self) -> RawStream:
        """The byte stream under the frames (for the host that opened it)."""
        return self._raw

    @property
    def closed(self) -> bool:
        """True once `close()` or `reset()` was called, or a frame was too large."""
        return self._closed

    async def read_request(
        self, refuse: Callable[[str, RemoteProtocolError], None]
    ) -> bytes | None:
        """The one request frame of a request-answer protocol, or None when there is none to
        answer: the peer closed first, or its frame was over the limit (then `refuse` is told,
        the stream having been reset)."""
        try:
            return await self.read_frame()
        except StreamClosed:
            return None
        except RemoteProtocolError as exc:
            refuse(self.remote_peer, exc)
            return None

    async def read_frame(self) -> bytes:
        """The next frame's payload.

        Raises:
            StreamClosed: clean EOF, or the stream was reset or closed; `StreamCutOff` for an
                EOF in the middle of a frame.
            TooLarge: the peer declared a frame above `max_frame_bytes`; the stream is reset.
            FrameTimeout: (inbound) a frame begun was not complete in time; the stream is reset.
            Busy: (inbound) no room in the shared budget for this frame; the stream is reset.
            StreamIdle: (inbound) no frame began within the idle timeout; the stream is reset.
        """
        async with self._read_lock:
            return await self._next_frame(None)

    async def write_then_read(self, payload: bytes) -> bytes:
        """`write_frame(payload)`, then `read_frame()`: a request and its answer (a batch and
        its ack; an ack and the next batch). When nothing is buffered, the write and the first
        read are one bridge hop instead of two; another writer then waits for that first chunk
        (both ends of the deliver protocol have one writer per stream). Raises what those two
        raise."""
        data = encode_frame(payload, max_frame_bytes=self.max_frame_bytes)
        async with self._read_lock:
            if self._decoder.buffered_bytes or self._eof or self._closed:
                await self._write(data)  # the answer may be here already: write on its own
                return await self._next_frame(None)
            return await self._next_frame(data)

    async def _next_frame(self, first_write: bytes | None) -> bytes:
        """`read_frame`'s loop (the read lock held); `first_write` goes out in the hop of the
        first chunk read, before it."""
        while True:
            try:
                frame = self._decoder.next_frame()
            except TooLarge:
                await self.reset()
                raise
            if frame is not None:
                if self._limits is not None:
                    self._frame_done()
                return frame
            if self._eof or self._closed:
                break
            if self._limits is None:
                chunk = await self._read_chunk(first_write)
            else:
                chunk = await self._read_limited(self._limits, first_write)
            first_write = None
            if chunk:
                self._decoder.feed(chunk)
            else:
                self._eof = True
        if self._decoder.buffered_bytes:
            raise StreamCutOff(
                f"stream from {self.remote_peer} ended inside a frame "
                f"({self._decoder.buffered_bytes} bytes buffered)"
            )
        raise StreamClosed(f"stream from {self.remote_peer} ended")

    async def _read_chunk(self, first_write: bytes | None) -> bytes:
        """One chunk in one bridge hop, after writing `first_write` (if any) in the same hop."""
        if first_write is None:
            return await self._bridge.run(self._raw.read, READ_CHUNK_BYTES)
        async with self._write_lock:
            if self._closed:
                raise StreamClosed(f"stream to {self.remote_peer} is closed")
            return await self._bridge.run(_write_then_read, self._raw, first_write)

    async def _read_limited(self, limits: ReadLimits, first_write: bytes | None) -> bytes:
        """One chunk, within the budget and the deadline of SPEC §10.4."""
        loop = asyncio.get_running_loop()
        pending = self._decoder.pending_frame_bytes
        if pending > self._reserved:  # a frame that did not arrive whole: hold its size
            if not limits.budget.reserve(self.remote_peer, pending - self._reserved):
                await self.reset()
                raise Busy(f"no room for a frame of {pending} bytes from {self.remote_peer}")
            self._reserved = pending
        if self._decoder.buffered_bytes:
            if self._frame_began is None:
                self._frame_began = loop.time()
            deadline = self._frame_began + limits.frame_timeout_s
        else:
            deadline = loop.time() + limits.idle_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                return await self._read_chunk(first_write)
        except TimeoutError:
            partial = self._decoder.buffered_bytes
            await self.reset()
            if partial:
                raise FrameTimeout(
                    f"{self.remote_peer} left a frame unfinished ({partial} bytes) for "
                    f"{limits.frame_timeout_s:g} s"
                ) from None
            raise StreamIdle(f"stream from {self.remote_peer} idle, reset") from None

    def _frame_done(self) -> None:
        """A frame came out whole: its reservation goes back, the next frame's clock starts."""
        self._give_back()
        self._frame_began = (
            asyncio.get_running_loop().time() if self._decoder.buffered_bytes else None
        )

    def _give_back(self) -> None:
        if self._reserved and self._limits is not None:
            self._limits.budget.release(self.remote_peer, self._reserved)
        self._reserved = 0

    def __aiter__(self) -> FrameStream:
        return self

    async def __anext__(self) -> bytes:
        if self._eof and not self._decoder.buffered_bytes:
            raise StopAsyncIteration
        try:
            return await self.read_frame()
        except StreamClosed:
            if self._eof and not self._closed:
                raise StopAsyncIteration from None
            raise

    async def write_frame(self, payload: bytes) -> None:
        """Send one frame.

        Raises:
            LocalProtocolError: `payload` is longer than `max_frame_bytes`.
            StreamClosed: the stream is closed or was reset.
        """
        await self._write(encode_frame(payload, max_frame_bytes=self.max_frame_bytes))

    async def write_frames(self, payloads: Sequence[bytes]) -> None:
        """Send several frames in one stream write (much cheaper than one write each)."""
        await self._write(encode_frames(payloads, max_frame_bytes=self.max_frame_bytes))

    async def write_bytes(self, data: bytes) -> None:
        """Send `data` as it is, unframed: for a test peer that must break the framing (a
        partial frame, a lying length); nodes only ever write frames."""
        await self._write(data)

    async def read_bytes(self) -> bytes:
        """One chunk as it came, unframed (`b""` at the end): for a test peer speaking a
        protocol framed otherwise (kad's varints); nodes only ever read frames."""
        return await self._read_chunk(None)

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            if self._closed:
                raise StreamClosed(f"stream to {self.remote_peer} is closed")
            await self._bridge.run(self._raw.write, data)

    async def close(self) -> None:
        """Close gracefully; the peer reads EOF. Idempotent; never raises if the host is gone."""
        if self._closed:
            return
        self._closed = True
        self._give_back()
        with contextlib.suppress(StreamClosed, HostClosed):
            await self._bridge.run(self._raw.close)

    async def reset(self) -> None:
        """Abort the stream. Idempotent; never raises if the host is gone."""
        self._closed = True
        self._give_back()
        with contextlib.suppress(StreamClosed, HostClosed):
            await self._bridge.run(self._raw.reset)

    async def __aenter__(self) -> FrameStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
        else:
            await self.reset()


async def _write_then_read(raw: RawStream, data: bytes) -> bytes:
    """Runs on the trio thread: one write, then one chunk read (`write_then_read`)."""
    await raw.write(data)
    return await raw.read(READ_CHUNK_BYTES)
