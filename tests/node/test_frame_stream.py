"""`FrameStream` over a real trio thread: how a stream's end reads (SPEC §10.2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from hearthmesh.node.p2p.bridge import TrioThread
from hearthmesh.node.p2p.errors import StreamClosed, StreamCutOff
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.framing import encode_frame


class _Bytes:
    """A raw stream that yields `data` in one chunk, then EOF."""

    def __init__(self, data: bytes) -> None:
        self._chunks = [data]

    async def read(self, max_bytes: int) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    async def write(self, data: bytes) -> None:
        return None

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        return None


@asynccontextmanager
async def _no_service() -> AsyncIterator[None]:
    yield


@asynccontextmanager
async def _stream(data: bytes) -> AsyncIterator[FrameStream]:
    bridge = TrioThread(name="test-frames")
    await bridge.start(_no_service)
    try:
        yield FrameStream(raw=_Bytes(data), bridge=bridge, remote_peer="peer", protocol_id="/t")
    finally:
        await bridge.stop()


async def test_a_stream_cut_off_inside_a_frame_ends_like_a_close_not_a_breach() -> None:
    async with asyncio.timeout(10):
        async with _stream(encode_frame(b"whole") + encode_frame(b"cut short")[:7]) as stream:
            assert await stream.read_frame() == b"whole"
            with pytest.raises(StreamCutOff, match="inside a frame") as ended:
                await stream.read_frame()
            assert isinstance(ended.value, StreamClosed)
            assert not isinstance(ended.value, RemoteProtocolError)  # never charged


async def test_a_clean_end_at_a_frame_boundary_is_a_plain_close() -> None:
    async with asyncio.timeout(10):
        async with _stream(encode_frame(b"one") + encode_frame(b"")) as stream:
            assert [frame async for frame in stream] == [b"one", b""]
            with pytest.raises(StreamClosed) as ended:
                await stream.read_frame()
            assert not isinstance(ended.value, StreamCutOff)
