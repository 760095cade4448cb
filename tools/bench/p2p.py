"""`hearthmesh bench p2p`: two libp2p hosts in this process, seen from asyncio.

Figures: request/response round trip over one stream (p50/p99 ms), and one-way throughput with
one 200-byte message per frame, with 50 messages packed in one frame, and with 50 one-message
frames per stream write (`write_frames`). kad-dht: `dht_put` / `dht_get` of fresh signed home
records: puts along a chain of `DHT_HOSTS` - 1 hosts, gets by a host that joins at the far end
afterwards (so every get is a network lookup); p50 and max ms.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any, Final

from hearthmesh.node.p2p.dht import home_record_rules
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.home_record import encode_home_record, issue_home_record
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from hearthmesh.tools.bench.stats import percentile

__all__ = ["run"]

ECHO: Final = "/hearthmesh/bench-echo/1"
SINK: Final = "/hearthmesh/bench-sink/1"
MESSAGE_BYTES: Final = 200
BATCH: Final = 50
DHT_HOSTS: Final = 6


async def _echo(stream: FrameStream) -> None:
    async for frame in stream:
        await stream.write_frame(frame)


async def _sink(stream: FrameStream) -> None:
    """First frame: the number of frames to expect; then count them and ack once."""
    expected = int.from_bytes(await stream.read_frame(), "big")
    for _ in range(expected):
        await stream.read_frame()
    await stream.write_frame(b"ack")


async def _round_trips(a: P2PHost, peer: str, count: int) -> dict[str, float]:
    payload = os.urandom(MESSAGE_BYTES)
    async with await a.open_stream(peer, ECHO) as stream:
        for _ in range(20):  # warm-up
            await stream.write_frame(payload)
            await stream.read_frame()
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            await stream.write_frame(payload)
            await stream.read_frame()
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "rtt_p50_ms": round(statistics.median(samples), 3),
        "rtt_p99_ms": round(percentile(samples, 99), 3),
    }


async def _one_way(a: P2PHost, peer: str, frames: list[bytes], per_write: int) -> float:
    """Seconds to deliver `frames` (acknowledged by the sink), `per_write` frames per write."""
    async with await a.open_stream(peer, SINK) as stream:
        await stream.write_frame(len(frames).to_bytes(4, "big"))
        started = time.perf_counter()
        for i in range(0, len(frames), per_write):
            chunk = frames[i : i + per_write]
            if per_write == 1:
                await stream.write_frame(chunk[0])
            else:
                await stream.write_frames(chunk)
        assert await stream.read_frame() == b"ack"
        return time.perf_counter() - started


async def _main(quick: bool) -> dict[str, Any]:
    rtt_count = 300 if quick else 2_000
    messages = 3_000 if quick else 20_000
    message = os.urandom(MESSAGE_BYTES)
    async with (
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as a,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as b,
    ):
        b.set_stream_handler(ECHO, _echo)
        b.set_stream_handler(SINK, _sink)
        started = time.perf_counter()
        await a.connect(b.listen_addrs[0])
        connect_ms = (time.perf_counter() - started) * 1000
        figures: dict[str, Any] = {"connect_ms": round(connect_ms, 2)}
        figures.update(await _round_trips(a, b.peer_id, rtt_count))

        single = await _one_way(a, b.peer_id, [message] * messages, per_write=1)
        packed = [message * BATCH] * (messages // BATCH)
        batched = await _one_way(a, b.peer_id, packed, per_write=1)
        many = await _one_way(a, b.peer_id, [message] * messages, per_write=BATCH)
    figures.update(
        {
            "message_bytes": MESSAGE_BYTES,
            "messages": messages,
            "one_msg_per_frame_frames_per_s": round(messages / single),
            "fifty_msgs_per_frame_frames_per_s": round(len(packed) / batched),
            "fifty_msgs_per_frame_msgs_per_s": round(messages / batched),
            "fifty_frames_per_write_frames_per_s": round(messages / many),
        }
    )
    return figures


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _dht(samples: int) -> dict[str, Any]:
    validate, select = home_record_rules(_now_ms)
    configs = [
        HostConfig(identity_seed=os.urandom(32), dht_validate=validate, dht_select=select)
        for _ in range(DHT_HOSTS)
    ]
    async with AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(P2PHost(c)) for c in configs]
        *chain, late = hosts
        for near, far in itertools.pairwise(chain):
            await far.connect(near.listen_addrs[0])
        put_ms, get_ms, records = [], [], []
        for _ in range(samples):
            user = keypair_from_seed(os.urandom(32))
            record = issue_home_record(
                user, issued_ms=_now_ms(), homes=(chain[0].peer_id,), addrs=(), devices=()
            )
            key, value = home_record_key(UserId(user.public)), encode_home_record(record)
            started = time.perf_counter()
            await chain[0].dht_put(key, value)
            put_ms.append((time.perf_counter() - started) * 1000)
            records.append((key, value))
        # A put reaches every host of a mesh this small, so gets are timed on a host that
        # joins afterwards (at the far end): each get is a network lookup.
        await late.connect(chain[-1].listen_addrs[0])
        for key, value in records:
            started = time.perf_counter()
            assert await late.dht_get(key) == value
            get_ms.append((time.perf_counter() - started) * 1000)
    return {
        "dht_hosts": DHT_HOSTS,
        "dht_put_ms": round(statistics.median(put_ms), 2),
        "dht_get_ms": round(statistics.median(get_ms), 2),
        "dht_put_max_ms": round(max(put_ms), 2),
        "dht_get_max_ms": round(max(get_ms), 2),
    }


def run(quick: bool) -> dict[str, Any]:
    """Start two hosts on 127.0.0.1, measure, stop them; returns the figures."""
    figures = asyncio.run(_main(quick))
    figures.update(asyncio.run(_dht(10 if quick else 50)))
    return figures
