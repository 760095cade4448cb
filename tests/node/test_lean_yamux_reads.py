"""Plain yamux DATA frames read by a lean loop (`LeanYamux`, node/p2p/yamux.py): real py-libp2p
hosts on 127.0.0.1, lean and plain muxers each way, and hostile frames from a plain peer."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr  # type: ignore[import-untyped]
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.yamux.yamux import MAX_WINDOW_SIZE, TYPE_DATA, YAMUX_HEADER_FORMAT, Yamux

from hearthmesh.node.p2p.yamux import (
    LeanYamux,
    adopt_yamux_stream,
    answers_ping,
    read_plain_frames_lean,
    watch_reads,
)
from tests.node.test_pipelined_select import _plain_host

pytestmark = pytest.mark.integration

ECHO = TProtocol("/hearthmesh/test-echo/1")
BULK_BYTES = 600_000
"""More than twice the initial 256 KiB window: window updates, py-libp2p's frames, interleave
with the lean loop's."""


def _host(lean: bool) -> BasicHost:
    host = _plain_host()
    if lean:
        read_plain_frames_lean(host.get_network())
    return host


async def _echo(stream: INetStream) -> None:
    """Echo until the opener closes its side, then close ours (credit in half windows)."""
    adopt_yamux_stream(stream.muxed_stream)  # type: ignore[attr-defined]
    while data := await _read_or_end(stream):
        await stream.write(data)
    await stream.close()


async def _read_or_end(stream: INetStream) -> bytes:
    try:
        return await stream.read(65536)
    except Exception:  # EOF is an exception in py-libp2p 0.8.1
        return b""


@asynccontextmanager
async def _two(lean: tuple[bool, bool]) -> AsyncIterator[tuple[BasicHost, BasicHost]]:
    """Two py-libp2p hosts on 127.0.0.1, the first connected to the second, both echoing;
    `lean` says which read plain frames lean."""
    opener, listener = _host(lean[0]), _host(lean[1])
    opener.set_stream_handler(ECHO, _echo)
    listener.set_stream_handler(ECHO, _echo)
    loopback = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with opener.run(listen_addrs=loopback), listener.run(listen_addrs=loopback):
        await opener.connect(PeerInfo(listener.get_id(), listener.get_addrs()))
        yield opener, listener


async def _echo_through(opener: BasicHost, listener: BasicHost, payload: bytes) -> None:
    stream = await opener.new_stream(listener.get_id(), [ECHO])
    await _echo_on(stream, payload)
    await stream.close()


async def _echo_on(stream: INetStream, payload: bytes) -> None:
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.write, payload)
        while len(got) < len(payload):
            got += await stream.read(65536)
    assert bytes(got) == payload


def _muxer_of(host: BasicHost, peer: BasicHost) -> Yamux:
    conns = host.get_network().get_connections(peer.get_id())
    muxed = conns[0].muxed_conn
    assert isinstance(muxed, Yamux)
    return muxed


@pytest.mark.parametrize(
    ("opener_lean", "listener_lean"), [(True, False), (False, True), (True, True), (False, False)]
)
def test_lean_and_plain_muxers_agree_either_way(opener_lean: bool, listener_lean: bool) -> None:
    """Small frames, several streams at once, bulk past the window (with our credit rule and
    without), a close and a reset all come through the same with either muxer at either end."""

    async def run() -> None:
        with trio.fail_after(60):
            async with _two((opener_lean, listener_lean)) as (opener, listener):
                assert isinstance(_muxer_of(opener, listener), LeanYamux) == opener_lean
                assert isinstance(_muxer_of(listener, opener), LeanYamux) == listener_lean
                for n in range(20):
                    await _echo_through(opener, listener, bytes([n]) * (n * 37 + 1))
                async with trio.open_nursery() as nursery:
                    for n in range(4):
                        nursery.start_soon(_echo_through, opener, listener, bytes([n]) * 9_000)
                await _echo_through(opener, listener, bytes(range(256)) * (BULK_BYTES // 256))
                stream = await opener.new_stream(listener.get_id(), [ECHO])
                adopt_yamux_stream(stream.muxed_stream)  # type: ignore[attr-defined]
                await _echo_on(stream, bytes(range(256)) * (BULK_BYTES // 256))
                await stream.reset()
                reset = await opener.new_stream(listener.get_id(), [ECHO])
                await reset.write(b"x")
                assert await reset.read(1) == b"x"
                await listener_side_resets(listener, opener)
                with pytest.raises((StreamReset, StreamEOF)):  # either, as py-libp2p has it
                    while True:
                        await reset.read(1)

    async def listener_side_resets(listener: BasicHost, opener: BasicHost) -> None:
        muxer = _muxer_of(listener, opener)
        for stream in list(muxer.streams.values()):
            await stream.reset()

    trio.run(run)


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "plain"])
def test_plain_data_frames_skip_py_libp2ps_loop(lean: bool) -> None:
    """With the lean loop, no plain DATA frame reaches py-libp2p's loop, and no stream's read
    goes through py-libp2p's `read_stream` (their debug lines are the witnesses); without it,
    every one does."""
    seen: list[str] = []
    reads: list[str] = []

    class Witness(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if "YAMUX RX: type=DATA flags=0 " in text:
                seen.append(text)
            if text.startswith("Reading from stream "):
                reads.append(text)

    yamux_log = logging.getLogger("libp2p.stream_muxer.yamux.yamux")
    witness, level = Witness(), yamux_log.level

    async def run() -> None:
        with trio.fail_after(30):
            async with _two((lean, lean)) as (opener, listener):
                stream = await opener.new_stream(listener.get_id(), [ECHO])
                yamux_log.addHandler(witness)
                yamux_log.setLevel(logging.DEBUG)
                try:
                    for n in range(30):
                        await stream.write(bytes([n]) * 200)
                        assert await stream.read(65536) == bytes([n]) * 200
                finally:
                    yamux_log.removeHandler(witness)
                    yamux_log.setLevel(level)
                await stream.close()

    trio.run(run)
    if lean:
        assert seen == reads == []
    else:
        assert len(seen) >= 30 and len(reads) >= 30


def _frame(stream_id: int, body: bytes, *, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, stream_id, size) + body


def test_hostile_data_frames_to_a_lean_muxer() -> None:
    """From a plain peer: DATA for a stream that does not exist is dropped and the connection
    serves on; DATA announcing more than the largest window closes the connection (both as
    py-libp2p's own loop does, which gets those frames)."""

    async def run() -> None:
        with trio.fail_after(30):
            async with _two((False, True)) as (plain, lean):
                sender = _muxer_of(plain, lean)
                receiver = _muxer_of(lean, plain)
                assert isinstance(receiver, LeanYamux)
                await sender._write_frame(_frame(9_999, b"nobody's"))
                await _echo_through(plain, lean, b"still served")
                assert 9_999 not in receiver.streams
                await sender._write_frame(_frame(1, b"", length=MAX_WINDOW_SIZE + 1))
                with trio.fail_after(10):
                    await receiver.event_shutting_down.wait()

    trio.run(run)


def test_frames_the_lean_loop_reads_count_as_heard_for_liveness() -> None:
    """`watch_reads` notes every read, the lean loop's too: a connection that carried only
    plain DATA frames since a moment was heard since then (`answers_ping`'s heard rule)."""

    async def run() -> None:
        with trio.fail_after(30):
            async with _two((False, True)) as (plain, lean):
                stream = await plain.new_stream(lean.get_id(), [ECHO])
                adopt_yamux_stream(stream.muxed_stream)  # type: ignore[attr-defined]
                await stream.write(b"open")
                assert await stream.read(65536) == b"open"
                receiver = _muxer_of(lean, plain)
                watch_reads(receiver)
                await trio.sleep(0.01)  # the watch's first note is older than `before`
                before = trio.current_time()
                for n in range(5):
                    await stream.write(bytes([n]) * 100)
                    assert await stream.read(65536) == bytes([n]) * 100
                since = trio.current_time() - before
                assert await answers_ping(receiver, 0.0, heard_within_s=since)
                await stream.close()

    trio.run(run)
