"""A connection's keepalive pings (`LeanYamux._measure_rtt_loop`, node/p2p/yamux.py, SPEC
§20.6): real py-libp2p hosts on 127.0.0.1 with lean muxers at both ends, the interval made
short (py-libp2p's own with it, so the test fails with py-libp2p's loop)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.host.basic_host import BasicHost
from libp2p.stream_muxer.yamux import yamux as py_yamux
from libp2p.stream_muxer.yamux.yamux import FLAG_SYN, TYPE_PING, YAMUX_HEADER_FORMAT, Yamux

from hearthmesh.node.p2p.yamux import LeanYamux, adopt_yamux_stream, watch_reads
from tests.node.test_lean_yamux_reads import ECHO, _muxer_of, _two

pytestmark = pytest.mark.integration

INTERVAL_S = 0.2
WINDOW_S = 2.0
"""Ten intervals: a quiet connection's dialer pings about ten times in it (twice at least,
however loaded the machine)."""


@pytest.fixture(autouse=True)
def _short_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LeanYamux, "keepalive_s", INTERVAL_S)
    monkeypatch.setattr(py_yamux, "RTT_MEASURE_INTERVAL", INTERVAL_S)


def _count_pings(muxer: Yamux) -> list[float]:
    """The times `muxer` writes a ping (not a pong) from now on."""
    sent: list[float] = []
    write: Callable[[bytes], Awaitable[None]] = muxer._write_frame

    async def counting(data: bytes) -> None:
        _, kind, flags, _, _ = struct.unpack(YAMUX_HEADER_FORMAT, data[:12])
        if kind == TYPE_PING and flags & FLAG_SYN:
            sent.append(trio.current_time())
        await write(data)

    muxer._write_frame = counting  # type: ignore[method-assign]
    return sent


@asynccontextmanager
async def _watched_pair(
    pings: dict[str, list[float]],
) -> AsyncIterator[tuple[BasicHost, BasicHost, Yamux, Yamux]]:
    """Two hosts, the first dialled to the second, their muxers' reads watched (as the host
    watches each connection's) and, once past the first pings, their pings counted into
    `pings["dialer"]` and `pings["listener"]`."""
    async with _two((True, True)) as (dialer, listener):
        out, into = _muxer_of(dialer, listener), _muxer_of(listener, dialer)
        watch_reads(out)
        watch_reads(into)
        await trio.sleep(1.0)
        pings["dialer"], pings["listener"] = _count_pings(out), _count_pings(into)
        yield dialer, listener, out, into


def test_a_quiet_connection_is_kept_alive_by_its_dialer_alone() -> None:
    """Both ends measure the RTT once as the connection starts; then the dialer pings each
    interval and the listener never (py-libp2p: both ends, each interval)."""
    pings: dict[str, list[float]] = {}

    async def run() -> None:
        with trio.fail_after(30):
            async with _watched_pair(pings) as (_, _, out, into):
                assert out.rtt() > 0 and into.rtt() > 0
                await trio.sleep(WINDOW_S)

    trio.run(run)
    assert pings["listener"] == []
    assert len(pings["dialer"]) >= 2


def test_a_connection_that_carries_bytes_from_the_peer_is_not_pinged() -> None:
    """The listener writes to the dialer every half interval: neither end pings."""
    pings: dict[str, list[float]] = {}

    async def run() -> None:
        with trio.fail_after(30):
            async with _watched_pair(pings) as (dialer, listener, _, _):
                stream = await dialer.new_stream(listener.get_id(), [ECHO])
                adopt_yamux_stream(stream.muxed_stream)  # type: ignore[attr-defined]
                deadline = trio.current_time() + WINDOW_S
                while trio.current_time() < deadline:
                    await stream.write(b"tick")  # echoed back: bytes from the listener
                    assert await stream.read(65536) == b"tick"
                    await trio.sleep(INTERVAL_S / 2)
                await stream.close()

    trio.run(run)
    assert pings == {"dialer": [], "listener": []}
