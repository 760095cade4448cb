"""`FrameStream` over a real trio thread: how a stream's end reads (SPEC §10.2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

from hearthmesh.node.p2p.bridge import TrioThread
from hearthmesh.node.p2p.errors import StreamClosed, StreamCutOff
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.framing import encode_frame

T = TypeVar("T")


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


class _Answering:
    """A raw stream that answers each write with the next of `answers` (then EOF)."""

    def __init__(self, answers: list[bytes], *, buffered: bytes = b"") -> None:
        self._answers = answers
        self._chunks = [buffered] if buffered else []
        self.log: list[str] = []

    async def read(self, max_bytes: int) -> bytes:
        self.log.append("read")
        return self._chunks.pop(0) if self._chunks else b""

    async def write(self, data: bytes) -> None:
        self.log.append(f"write {len(data)}")
        if self._answers:
            self._chunks.append(self._answers.pop(0))

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        return None


class _CountingBridge(TrioThread):
    hops = 0

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        self.hops += 1
        return await super().run(fn, *args)


async def test_a_request_and_its_answer_cross_the_bridge_once() -> None:
    async with asyncio.timeout(10):
        bridge = _CountingBridge(name="test-frames")
        await bridge.start(_no_service)
        try:
            raw = _Answering([encode_frame(b"ack 1"), encode_frame(b"ack 2")])
            stream = FrameStream(raw=raw, bridge=bridge, remote_peer="peer", protocol_id="/t")
            assert await stream.write_then_read(b"batch 1") == b"ack 1"
            assert await stream.write_then_read(b"batch 2") == b"ack 2"
            assert raw.log == ["write 11", "read", "write 11", "read"]
            assert bridge.hops == 2
            with pytest.raises(StreamClosed):  # no answer: the peer closed
                await stream.write_then_read(b"batch 3")
        finally:
            await bridge.stop()


async def test_an_answer_already_buffered_is_read_after_the_write_goes_out() -> None:
    async with asyncio.timeout(10):
        bridge = TrioThread(name="test-frames")
        await bridge.start(_no_service)
        try:
            raw = _Answering([], buffered=encode_frame(b"first") + encode_frame(b"second"))
            stream = FrameStream(raw=raw, bridge=bridge, remote_peer="peer", protocol_id="/t")
            assert await stream.read_frame() == b"first"
            assert await stream.write_then_read(b"ack") == b"second"
            assert raw.log == ["read", "write 7"]
        finally:
            await bridge.stop()
