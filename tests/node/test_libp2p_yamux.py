"""The yamux stream rules (node/p2p/yamux.py) on real hosts: receive credit in half-window
steps, and each write's frames kept together."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.framing import encode_frame

pytestmark = pytest.mark.integration

ECHO = "/hearthmesh/test-echo/1"
SINK = "/hearthmesh/test-sink/1"


async def _echo(stream: FrameStream) -> None:
    async for frame in stream:
        await stream.write_frame(frame)


def _yamux_of(stream: FrameStream) -> YamuxStream:
    muxed = stream._raw._stream.muxed_stream  # type: ignore[attr-defined]
    assert isinstance(muxed, YamuxStream)
    return muxed


@asynccontextmanager
async def _connected_hosts(first: int) -> AsyncIterator[tuple[P2PHost, P2PHost]]:
    """Two real hosts (identity seeds `first` and `first + 1`), the first connected to the
    second."""
    async with (
        P2PHost(HostConfig(identity_seed=bytes([first]) * 32)) as a,
        P2PHost(HostConfig(identity_seed=bytes([first + 1]) * 32)) as b,
    ):
        await a.connect(b.listen_addrs[0])
        yield a, b


@asynccontextmanager
async def _echo_stream(first: int) -> AsyncIterator[FrameStream]:
    """A stream from one real host to another that echoes every frame."""
    async with _connected_hosts(first) as (a, b):
        b.set_stream_handler(ECHO, _echo)
        async with await a.open_stream(b.peer_id, ECHO) as stream:
            yield stream


async def test_small_frames_cost_no_window_update_and_half_a_window_returns_credit() -> None:
    async with asyncio.timeout(10), _echo_stream(0x31) as stream:
        yamux = _yamux_of(stream)
        await stream.write_frame(b"first")
        assert await stream.read_frame() == b"first"
        before = yamux.send_window
        for _ in range(100):
            payload = os.urandom(300)
            await stream.write_frame(payload)
            assert await stream.read_frame() == payload
        # b read every frame, yet returned no credit: our send window only shrank.
        assert yamux.send_window <= before - 100 * 300
        # Once half of b's window is read, b credits it back in one update.
        credited = False
        for _ in range(40):
            shrunk = yamux.send_window - DEFAULT_WINDOW_SIZE
            big = os.urandom(DEFAULT_WINDOW_SIZE)
            await stream.write_frame(big)
            assert await stream.read_frame() == big
            if yamux.send_window > shrunk:
                credited = True
                break
        assert credited


async def test_a_write_that_fits_one_frame_skips_py_libp2ps_write_and_a_bigger_one_does_not() -> (
    None
):
    """A write that fits one frame and the window goes out without py-libp2p's `write` (its
    debug line is the witness), still charged to the send window (the test above); a bigger
    one still goes through it."""
    lines: list[str] = []

    class Witness(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    yamux_log = logging.getLogger("libp2p.stream_muxer.yamux.yamux")
    witness, level = Witness(), yamux_log.level
    async with asyncio.timeout(20), _echo_stream(0x3B) as stream:
        mine = f"Stream {_yamux_of(stream).stream_id}: Starts writing"
        yamux_log.addHandler(witness)
        yamux_log.setLevel(logging.DEBUG)
        try:
            for n in range(10):
                await stream.write_frame(bytes([n]) * 300)
                assert await stream.read_frame() == bytes([n]) * 300
            small = sum(mine in line for line in lines)
            big = os.urandom(100_000)  # two frames
            await stream.write_frame(big)
            assert await stream.read_frame() == big
        finally:
            yamux_log.removeHandler(witness)
            yamux_log.setLevel(level)
    assert small == 0
    assert sum(mine in line for line in lines) >= 1


def _gossip_stream_to(host: P2PHost, peer_id: str) -> YamuxStream:
    """The gossipsub stream `host` opened to `peer_id` (it writes there, and reads the one the
    peer opened): libp2p opens it itself, never through our API."""
    network = host._host.get_network()  # type: ignore[union-attr]
    for conn in network.connections[ID.from_base58(peer_id)]:
        for stream in conn.get_streams():
            if str(stream.get_protocol()).startswith("/meshsub/"):
                muxed = getattr(stream, "muxed_stream", None)
                assert isinstance(muxed, YamuxStream)
                if muxed.is_initiator:
                    return muxed
    raise AssertionError("no gossipsub stream")


async def test_libp2ps_own_streams_return_credit_in_half_windows_too() -> None:
    """Gossipsub's stream (as kad-dht's walks and identify's) is opened by libp2p, not by us:
    its reader, too, returns no credit for small frames (SPEC §10.1)."""
    topic = "hearthmesh/test/credit"
    async with asyncio.timeout(30), _connected_hosts(0x35) as (a, b):
        sub = await b.subscribe(topic)
        await a.subscribe(topic)
        await a.wait_for_mesh_peer(topic, b.peer_id)
        await a.publish(topic, b"first")
        assert (await sub.get()).data == b"first"
        stream = _gossip_stream_to(a, b.peer_id)
        before = stream.send_window
        for n in range(100):
            await a.publish(topic, n.to_bytes(2, "big") + os.urandom(300))
            await sub.get()
        # b read all 100 messages, yet returned no credit: a's send window only shrank.
        assert stream.send_window <= before - 100 * 300


async def test_frames_larger_than_the_window_still_flow_both_ways() -> None:
    async with asyncio.timeout(20), _echo_stream(0x33) as stream:
        for _ in range(4):
            payload = os.urandom(900_000)  # > 3 windows of 256 KiB each way
            await stream.write_frame(payload)
            assert await stream.read_frame() == payload


async def test_two_writers_on_one_stream_each_get_their_frames_through_whole() -> None:
    """Two writes at once on one stream, each larger than the send window (as gossipsub's
    sending loop and its replay to a new subscriber write): py-libp2p took the stream's lock per
    yamux frame, so one write's frames went inside the other's message while it waited for
    credit, and the reader got garbage (SPEC §10.1). Each write now goes out whole."""
    got: list[bytes] = []
    ended = asyncio.Event()

    async def sink(stream: FrameStream) -> None:
        try:
            async for frame in stream:
                got.append(frame)
        finally:
            ended.set()

    async def two_writers(raw: object, first: bytes, second: bytes) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw.write, first)  # type: ignore[attr-defined]
            nursery.start_soon(raw.write, second)  # type: ignore[attr-defined]

    payloads = [os.urandom(900_000), os.urandom(900_000)]  # ~3.5 windows each
    async with asyncio.timeout(30), _connected_hosts(0x37) as (a, b):
        b.set_stream_handler(SINK, sink)
        async with await a.open_stream(b.peer_id, SINK) as stream:
            frames = [encode_frame(p) for p in payloads]
            await stream._bridge.run(two_writers, stream._raw, *frames)
        await ended.wait()
    assert sorted(got) == sorted(payloads)


async def test_a_write_cancelled_part_way_resets_the_stream() -> None:
    """A write cut off while it waits for credit has put part of its message on the stream:
    nothing may follow it there. The stream is reset; the reader gets the reset, not a frame
    whose bytes run into the next message's (SPEC §10.1)."""
    reading = asyncio.Event()
    got: list[bytes] = []
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def late_sink(stream: FrameStream) -> None:
        await reading.wait()  # reads nothing until the writer's window is spent
        try:
            async for frame in stream:
                got.append(frame)
        except Exception as exc:
            ended.set_result(exc)
        else:
            ended.set_result(None)

    async with asyncio.timeout(30), _connected_hosts(0x39) as (a, b):
        b.set_stream_handler(SINK, late_sink)
        stream = await a.open_stream(b.peer_id, SINK)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):  # the window is 256 KiB: the write waits for good
                await stream.write_frame(os.urandom(900_000))
        with pytest.raises(StreamClosed):
            await stream.write_frame(b"after")
        reading.set()
        assert isinstance(await ended, StreamClosed)
    assert got == []
