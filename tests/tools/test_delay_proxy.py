"""The delay proxy of `hearthmesh simulate --latency` (SPEC §20.4), with real sockets on
127.0.0.1: the delay is there each way, order is kept under jitter, a close on one side
reaches the other, and a reader that stops cannot make the proxy hold more than its bound;
and one short simulate run of real processes behind the proxies."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from hearthmesh.tools.cli import main
from hearthmesh.tools.simulate.delay_proxy import (
    MAX_HELD_BYTES,
    DelayProxy,
    Latency,
    LatencySpecError,
    parse_latency,
    unproxied_peers,
)
from hearthmesh.tools.simulate.run import SimulateConfig, run_simulation

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@asynccontextmanager
async def _proxied(
    handler: Handler, latency: Latency, seed: int = 0
) -> AsyncIterator[tuple[DelayProxy, int]]:
    """A server running `handler` and a proxy in front of it: (the proxy, the proxy's port)."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = DelayProxy(("127.0.0.1", 0), ("127.0.0.1", port), latency.sampler(seed))
    await proxy.start()
    try:
        yield proxy, proxy.port
    finally:
        proxy.close()
        server.close()


async def _until(condition: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    async with asyncio.timeout(deadline_s):
        while not condition():  # noqa: ASYNC110 - sockets and counters, no event to wait on
            await asyncio.sleep(0.01)
    assert condition(), what


def test_latency_parses_ms_and_jitter() -> None:
    assert parse_latency("50") == Latency(0.05)
    assert parse_latency("50±10") == parse_latency("50+-10") == Latency(0.05, 0.01)
    for bad in ("", "fast", "-5", "10±20"):
        with pytest.raises(LatencySpecError):
            parse_latency(bad)


async def test_a_round_trip_takes_at_least_twice_the_delay() -> None:
    delay = 0.1
    async with _proxied(_echo, Latency(delay)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            began = time.monotonic()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            assert time.monotonic() - began >= 2 * delay
        writer.close()


async def test_order_is_kept_under_jitter() -> None:
    sent = b"".join(i.to_bytes(4, "big") for i in range(50_000))
    async with _proxied(_echo, Latency(0.02, 0.02), seed=3) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for at in range(0, len(sent), 1000):  # many small chunks, each drawn its own delay
            writer.write(sent[at : at + 1000])
            await writer.drain()
            await asyncio.sleep(0)
        assert await reader.readexactly(len(sent)) == sent
        writer.close()


async def test_a_close_on_either_side_reaches_the_other() -> None:
    server_saw_eof = asyncio.Event()

    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        server_saw_eof.set()
        writer.close()

    async def closes_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.close()

    async with _proxied(until_eof, Latency(0.05)) as (proxy, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"last words")
        writer.write_eof()  # the client's side closes: the server sees it, then closes its own
        async with asyncio.timeout(20):
            await server_saw_eof.wait()
            assert await reader.read() == b""
        writer.close()
        await _until(lambda: proxy.held() == 0 and not proxy.upstream_sources, "connection ended")
    async with _proxied(closes_at_once, Latency(0.05)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(20):
            assert await reader.read() == b"bye"  # the data, then the server's close
        writer.close()


async def test_a_dial_while_the_node_is_down_is_refused() -> None:
    async with _proxied(_echo, Latency(0.01)) as (proxy, port):
        proxy.upstream = ("127.0.0.1", 1)  # nothing listens there
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(20):
            with pytest.raises(ConnectionResetError):
                await reader.read()
        writer.close()


async def test_a_reader_that_stops_cannot_make_the_proxy_hold_more_than_its_bound() -> None:
    reading = asyncio.Event()
    received = 0

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reading.wait()  # reads nothing until told
        while data := await reader.read(65536):
            received += len(data)
        writer.close()

    total = 64 * 1024 * 1024  # more than the kernel's buffers on every socket of the path
    async with _proxied(stalls, Latency(0.01)) as (proxy, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bytes(total))  # asyncio keeps what the kernel does not take
        transport = writer.transport
        most = 0
        last, still_since = transport.get_write_buffer_size(), time.monotonic()
        async with asyncio.timeout(60):  # until the sender has pushed nothing for 1 s
            while time.monotonic() - still_since < 1.0:
                await asyncio.sleep(0.01)
                most = max(most, proxy.held())
                now = transport.get_write_buffer_size()
                if now != last:
                    last, still_since = now, time.monotonic()
        assert most <= MAX_HELD_BYTES, f"the proxy held {most} bytes"
        assert 0 < last < total, "the sender is held back, not done"
        reading.set()  # once the reader reads, everything arrives
        await _until(lambda: received == total, f"{received} of {total} arrived", 60)
        writer.close()


async def test_a_dial_of_the_real_port_is_seen_and_a_proxied_one_is_not() -> None:
    async with _proxied(_echo, Latency(0.01)) as (proxy, port):
        real = proxy.upstream[1]
        _, via_proxy = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: len(proxy.upstream_sources) == 1, "the proxy dialled")
        await _until(
            lambda: unproxied_peers(os.getpid(), real, proxy.upstream_sources) == set(),
            "only the proxy's connection",
        )
        _, direct = await asyncio.open_connection("127.0.0.1", real)
        mine = direct.get_extra_info("sockname")
        await _until(
            lambda: unproxied_peers(os.getpid(), real, proxy.upstream_sources) == {mine},
            "the direct dial is seen",
        )
        for writer in (via_proxy, direct):
            writer.close()


@pytest.mark.parametrize("bad", ["fast", "10±20"])
def test_a_bad_latency_is_refused_before_any_node_starts(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--latency", bad, "--no-progress"]) == 2
    assert "--latency" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.slow
async def test_a_simulate_run_with_latency_keeps_every_invariant_and_shows_the_delay() -> None:
    """Three `hearthmesh run` processes, each behind a 100 ms proxy: every delivery crosses
    at least one hop, so the median latency is at least the delay (without the proxies it is
    ~20 ms on loopback), and no peer dialled a node's real port."""
    config = SimulateConfig(
        nodes=3,
        latency=Latency(0.1),
        duration=2.0,
        rate=6.0,  # 12 messages, as 4 s at 3 a second were: the same work, 2 s sooner
        seed=19,
        progress=False,
    )
    async with asyncio.timeout(240):  # a guard: under load a start takes 10-30 s
        report = await run_simulation(config)
    assert report["ok"], json.dumps(report, default=str)
    assert report["missing"] == report["duplicates"] == report["out_of_order"] == 0, report
    assert report["converged"] and report["delivered"] == 2 * report["acked"] >= 16, report
    assert report["config"]["latency_ms"] == 100.0, report
    assert report["unproxied_connections"] == [], report
    assert report["latency_p50_s"] >= 0.1, report
