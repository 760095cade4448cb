"""`FrameStream`: the asyncio view of one libp2p stream, with buffered length-prefixed frames.

The bytes live on the trio thread; each call here is one bridge hop (~0.1 ms) that reads a whole
chunk (up to `READ_CHUNK_BYTES`) or writes a whole buffer, and `FrameDecoder` splits chunks into
frames on the asyncio side. So a burst of small frames costs one hop per chunk, not per frame.

End of stream: `read_frame()` raises `StreamClosed` at a clean EOF (the peer closed at a frame
boundary), because an empty frame `b""` is a valid payload and cannot double as EOF.
`async for frame in stream` ends quietly at a clean EOF. EOF in the middle of a frame raises
`StreamCutOff`, a `StreamClosed`: the peer went away mid-write, which is no breach (SPEC
§10.2). A frame longer than `max_frame_bytes` raises `TooLarge` and resets the stream (a
length-prefixed stream cannot resynchronise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Protocol

from hearthmesh.node.framing import MAX_FRAME_BYTES, FrameDecoder, encode_frame, encode_frames
from hearthmesh.node.p2p_errors import HostClosed, StreamClosed, StreamCutOff
from hearthmesh.node.trio_bridge import TrioThread
from hearthmesh.protocol.errors import TooLarge

__all__ = ["READ_CHUNK_BYTES", "FrameStream", "RawStream"]

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
    ) -> None:
        self.remote_peer = remote_peer
        """Peer id (base58) at the other end."""
        self.protocol_id = protocol_id
        """The negotiated protocol."""
        self.max_frame_bytes = max_frame_bytes
        """Largest payload accepted or sent in one frame."""
        self._raw = raw
        self._bridge = bridge
        self._decoder = FrameDecoder(max_frame_bytes=max_frame_bytes)
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._eof = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `close()` or `reset()` was called, or a frame was too large."""
        return self._closed

    async def read_frame(self) -> bytes:
        """The next frame's payload.

        Raises:
            StreamClosed: clean EOF, or the stream was reset or closed; `StreamCutOff` for an
                EOF in the middle of a frame.
            TooLarge: the peer declared a frame above `max_frame_bytes`; the stream is reset.
        """
        async with self._read_lock:
            while True:
                try:
                    frame = self._decoder.next_frame()
                except TooLarge:
                    await self.reset()
                    raise
                if frame is not None:
                    return frame
                if self._eof or self._closed:
                    break
                chunk = await self._bridge.run(self._raw.read, READ_CHUNK_BYTES)
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
        with contextlib.suppress(StreamClosed, HostClosed):
            await self._bridge.run(self._raw.close)

    async def reset(self) -> None:
        """Abort the stream. Idempotent; never raises if the host is gone."""
        self._closed = True
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
