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
    """A raw stream that answers each frame written with `ack:` + its payload, in `chunks`
    pieces, and counts the calls that reach it."""

    def __init__(self, chunks: int) -> None:
        self._chunks = chunks
        self._out: list[bytes] = []
        self.calls: list[str] = []

    async def read(self, max_bytes: int) -> bytes:
        self.calls.append("read")
        return self._out.pop(0) if self._out else b""

    async def write(self, data: bytes) -> None:
        self.calls.append("write")
        answer = encode_frame(b"ack:" + data[4:])  # the 4-byte length prefix is dropped
        step = -(-len(answer) // self._chunks)
        self._out += [answer[i : i + step] for i in range(0, len(answer), step)]

    async def close(self) -> None:
        return None

    async def reset(self) -> None:
        return None


class _CountingBridge(TrioThread):
    """Counts the hops to the trio thread."""

    hops = 0

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        self.hops += 1
        return await super().run(fn, *args)


@pytest.mark.parametrize("chunks", [1, 3])
async def test_a_request_writes_its_frame_then_reads_the_answer(chunks: int) -> None:
    async with asyncio.timeout(10):
        bridge = _CountingBridge(name="test-request")
        await bridge.start(_no_service)
        try:
            raw = _Answering(chunks)
            stream = FrameStream(raw=raw, bridge=bridge, remote_peer="peer", protocol_id="/t")
            assert await stream.request(b"batch 1") == b"ack:batch 1"
            assert await stream.request(b"batch 2") == b"ack:batch 2"
            assert raw.calls == (["write"] + ["read"] * chunks) * 2
            assert bridge.hops == 2 * chunks  # an answer in one chunk: one hop per request
            await stream.close()
            with pytest.raises(StreamClosed):
                await stream.request(b"late")
        finally:
            await bridge.stop()
