"""Inbound stream bounds on real hosts (SPEC §10.4): caps, a byte budget, read timeouts, and
every stream-level offence reaching the refusal handler (SPEC §11.6)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.errors import (
    FrameTimeout,
    HearthError,
    RemoteProtocolError,
    TooLarge,
    TooManyStreams,
)
from hearthmesh.protocol.inbound import InboundPolicy
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

SINK = "/hearthmesh/test-sink/1"
NEARLY_FULL = (1 << 20) - 1
"""A frame one byte short of the 1 MiB limit."""


class Refusals:
    """A refusal handler that records what the host reports."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, RemoteProtocolError, bool]] = []

    def __call__(
        self, peer: str, error: RemoteProtocolError, *, protocol: str, whole_frame: bool = True
    ) -> None:
        self.seen.append((peer, error, whole_frame))

    def of(self, kind: type[RemoteProtocolError]) -> list[str]:
        return [peer for peer, error, _ in self.seen if isinstance(error, kind)]


@asynccontextmanager
async def victim_and_attacker(policy: InboundPolicy) -> AsyncIterator[tuple[P2PHost, P2PHost]]:
    async with AsyncExitStack() as stack:
        victim = await stack.enter_async_context(
            P2PHost(HostConfig(identity_seed=os.urandom(32), inbound=policy))
        )
        attacker = await stack.enter_async_context(
            P2PHost(HostConfig(identity_seed=os.urandom(32)))
        )
        await attacker.connect(victim.listen_addrs[0])
        await victim.wait_connected(attacker.peer_id)
        yield victim, attacker


async def write_raw(stream: FrameStream, data: bytes) -> None:
    """Bytes outside our framing: what a hostile peer may send (a header, half a frame)."""
    await stream._bridge.run(stream._raw.write, data)


def header(length: int) -> bytes:
    return struct.pack(">I", length)


async def test_many_streams_each_holding_a_nearly_full_frame_stay_bounded() -> None:
    """Issue #12 finding 5: 200 streams x 1 MiB - 1 byte added 244 MiB. Now the attacker holds
    at most its cap of streams, the bytes of partial frames stay within the budget, and each
    stream past its cap is charged to it."""
    policy = InboundPolicy(
        max_streams_per_peer=4, max_streams=64, max_buffered_bytes=3 << 20, frame_timeout_ms=20_000
    )
    refusals = Refusals()
    in_handler: dict[str, int] = {}
    most = 0

    async def sink(stream: FrameStream) -> None:
        nonlocal most
        peer = stream.remote_peer
        in_handler[peer] = in_handler.get(peer, 0) + 1
        most = max(most, in_handler[peer])
        try:
            async for _ in stream:
                pass
        finally:
            in_handler[peer] -= 1

    async def hold() -> None:
        with contextlib.suppress(HearthError):  # a refused stream may fail to open at all
            stream = await attacker.open_stream(victim.peer_id, SINK)
            await write_raw(stream, header(NEARLY_FULL) + bytes(NEARLY_FULL - 1))

    # 200 MiB offered through Noise: ~1 s alone, 9 s at load 30 (a fresh-clone CI beside five
    # venv builds); the bound is a hang's, not a speed
    async with asyncio.timeout(30), victim_and_attacker(policy) as (victim, attacker):
        victim.set_refusal_handler(refusals)
        victim.set_stream_handler(SINK, sink)
        async with asyncio.TaskGroup() as group:
            for _ in range(200):
                group.create_task(hold())
        # most of the 200 were past the attacker's cap: each one charged to it
        await wait_until(lambda: len(refusals.of(TooManyStreams)) >= 150)
        assert most <= policy.max_streams_per_peer
        assert 0 < victim.inbound.peak_buffered_bytes <= policy.max_buffered_bytes
        assert victim.inbound.streams_of(attacker.peer_id) <= policy.max_streams_per_peer
        assert {peer for peer, _, _ in refusals.seen} == {attacker.peer_id}


async def test_a_stalled_frame_is_cut_after_the_frame_timeout_and_charged() -> None:
    policy = InboundPolicy(frame_timeout_ms=300, idle_timeout_ms=60_000)
    refusals = Refusals()

    async def sink(stream: FrameStream) -> None:
        async for _ in stream:
            pass

    async with asyncio.timeout(8), victim_and_attacker(policy) as (victim, attacker):
        victim.set_refusal_handler(refusals)
        victim.set_stream_handler(SINK, sink)
        stream = await attacker.open_stream(victim.peer_id, SINK)
        await stream.write_frame(b"a whole frame first")
        await write_raw(stream, header(1000) + b"ten bytes!")  # then it stalls
        with pytest.raises(StreamClosed):  # the victim reset the stream
            await stream.read_frame()
        await wait_until(lambda: bool(refusals.seen))  # the charge follows the reset
        assert refusals.of(FrameTimeout) == [attacker.peer_id]
        assert victim.inbound.buffered_bytes == 0


async def test_an_idle_stream_is_reset_quietly_and_costs_nothing() -> None:
    policy = InboundPolicy(frame_timeout_ms=60_000, idle_timeout_ms=300)
    refusals = Refusals()
    ended = asyncio.Event()

    async def sink(stream: FrameStream) -> None:
        try:
            async for _ in stream:
                pass
        finally:
            ended.set()

    async with asyncio.timeout(8), victim_and_attacker(policy) as (victim, attacker):
        victim.set_refusal_handler(refusals)
        victim.set_stream_handler(SINK, sink)
        stream = await attacker.open_stream(victim.peer_id, SINK)
        await stream.write_frame(b"one frame, then silence")
        with pytest.raises(StreamClosed):
            await stream.read_frame()
        await ended.wait()
        await wait_until(lambda: not victim.inbound.streams)  # it follows the handler's end
        assert refusals.seen == []


async def test_an_error_a_handler_lets_out_is_charged_and_a_reset_peer_is_one_quiet_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every peer error path reaches the standing code, even one no handler catches (the
    oversized membership envelope of issue #12); a peer that resets its stream while we answer
    is one INFO line, not an ERROR with a traceback."""
    refusals = Refusals()
    answering = asyncio.Event()

    async def refuse(stream: FrameStream) -> None:
        await stream.read_frame()
        raise TooLarge("a body over its limit, found deep in a handler")

    async def answer_forever(stream: FrameStream) -> None:
        await stream.read_frame()
        answering.set()
        while True:
            await stream.write_frame(bytes(64 * 1024))

    caplog.set_level(logging.INFO, logger="hearthmesh.node.p2p.host")
    async with asyncio.timeout(8), victim_and_attacker(InboundPolicy()) as (victim, attacker):
        victim.set_refusal_handler(refusals)
        victim.set_stream_handler(SINK, refuse)
        victim.set_stream_handler(SINK + "/answer", answer_forever)
        stream = await attacker.open_stream(victim.peer_id, SINK)
        await stream.write_frame(b"anything")
        with pytest.raises(StreamClosed):
            await stream.read_frame()
        await wait_until(lambda: bool(refusals.seen))
        assert refusals.of(TooLarge) == [attacker.peer_id]

        stream = await attacker.open_stream(victim.peer_id, SINK + "/answer")
        await stream.write_frame(b"ask")
        await answering.wait()
        await stream.reset()  # a killed peer's streams end like this
        await wait_until(lambda: not victim.inbound.streams)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("ended early" in r.getMessage() for r in caplog.records)
    assert len(refusals.seen) == 1  # a reset costs the peer nothing
