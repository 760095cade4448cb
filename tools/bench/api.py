"""`hearthmesh bench api`: client to client through the WebSocket API, receipts on.

Two home nodes (alice on A, bob on B) on 127.0.0.1 with LMDB in a temporary directory, each a
`hearthmesh run` process as a person runs it; the three clients (apps, which live elsewhere)
share this process. Every message a client sends is durable on A before `message_sent`; bob's
client acks every message it receives (`delivered`), so signed receipts flow back while we
measure.

- same node: alice's "phone" sends, alice's "laptop" on the same node receives;
- across nodes: alice's phone sends, bob's client on node B receives.

Latency is one message at a time (send → the other client's `message` frame), and includes
what the clients themselves cost, since they share this process: traced (MEASUREMENTS §3.1),
the sender's encode and write took 0.03-0.04 ms at the median, and a frame the node had written
reached the receiving client's reader 0.11-0.21 ms later (p90 0.55-1.75 ms at load 16-22:
loopback and this process's turn, behind the sender's own frames); throughput is
N messages pipelined on one connection until the receiving client has them all. Each measured
phase starts once the one before has drained (every client has every message, alice a receipt
for each), so no latency sample waits behind the previous burst.
`*_max_ms` is the slowest sample (the tail issue #13 asks for): with `--quick`'s 50 samples
the nearest-rank p99 is that sample too, so the two agree there.
`*_node_cpu_us_per_msg` is the CPU time each node process used over both plain runs, per
message (with its receipt): a cost a loaded machine distorts far less than latency. The `deflate_*`
figures repeat both with three more clients that offer permessage-deflate (RFC 7692), as
browsers do, so the server compresses every frame it sends them. `*_node_loop` is how late
each node's event loop ran in a phase of its own after the plain runs (`tools/bench/loop_lag.py`:
a 1 ms ticker in the node; `stalls_over_2ms` counts its wake-ups more than 2 ms late): the same
samples and bursts again, same-node and across, with the ticker on, whose latencies are
`ticked_*`. Every other phase runs without it, as a real node does: a wake-up ready each
millisecond made the store's lone commits wait a turn or go to the writer thread
(ARCHITECTURE §10), so the instrument raised the latencies it was meant to explain.
`*_node_commits_per_msg` is each node's store write transactions (each one durable commit:
LMDB flushes the data, then the meta page) over the
whole run, its start and the receipts included, per message the clients sent.

`bench api-nosync` runs the same with both stores on tmpfs (/dev/shm), where fsync returns at
once: the same code with the disk's cost gone, so the path's own cost shows (an experiment; a
node never runs so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from hearthmesh.tools.bench.loop_lag import LOOP_LAG_ENV, TICK_OFF, TICK_ON, read_lag
from hearthmesh.tools.bench.stats import percentile, process_cpu_s
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import HomeProcess, spawn_home

__all__ = [
    "WARM",
    "BenchClient",
    "measure",
    "open_direct_room",
    "run",
    "run_nosync",
    "settled",
    "three_clients",
]


class BenchClient:
    """One WebSocket client that records when each message arrived and acks others' messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, own: str, *, ack: bool) -> None:
        self.ws = ws
        self.own = own
        self.ack = ack
        self.sent: dict[str, str] = {}
        self.arrived: dict[str, float] = {}
        self.receipts = 0
        self.changed = asyncio.Event()

    async def read(self) -> None:
        async for message in self.ws:
            frame = json.loads(message.data)
            event = frame["event"]
            if event == "message_sent":
                self.sent[frame["client_id"]] = frame["message_id"]
            elif event == "message":
                self.arrived[frame["message_id"]] = time.perf_counter()
                if self.ack and frame["sender_id"] != self.own:
                    await self.ws.send_str(
                        json.dumps(
                            {
                                "event": "ack",
                                "message_id": frame["message_id"],
                                "status": "delivered",
                            }
                        )
                    )
            elif event == "receipt":
                self.receipts += 1
            elif event == "error":
                raise RuntimeError(f"bench client got an error: {frame}")
            self.changed.set()

    async def wait(self, done: Callable[[], bool]) -> None:
        while not done():
            self.changed.clear()
            await self.changed.wait()


_SETTLE_S = 60.0
"""Longest a phase waits for the one before it to drain."""


async def settled(
    sender: BenchClient, clients: list[BenchClient], *, receipts: bool = True
) -> None:
    """Until every client has every message the sender sent so far, and (`receipts`) the
    sender a receipt for each: a phase's latencies start on an idle mesh. Without it the first
    cross-node sample rode behind the same-node burst still on its way to bob (traced: in a
    115-message DELIVER batch, 53 ms against a median of 5), and was the whole quick run's p99."""
    sent = set(sender.sent.values())
    async with asyncio.timeout(_SETTLE_S):
        for client in clients:

            def has_all(client: BenchClient = client) -> bool:
                return sent <= client.arrived.keys()

            await client.wait(has_all)
        if receipts:
            await sender.wait(lambda: sender.receipts >= len(sent))


async def measure(
    sender: BenchClient,
    receiver: BenchClient,
    room: str,
    *,
    samples: int,
    burst: int,
    tag: str,
    quiet: list[BenchClient],
    receipts: bool = True,
) -> dict[str, float]:
    """`samples` messages one at a time (each one's latency), then `burst` pipelined (msgs/s),
    once `quiet` has settled (`settled`)."""
    await settled(sender, quiet, receipts=receipts)
    latencies: list[float] = []
    for i in range(samples):
        client_id = f"{tag}-l{i}"
        start = time.perf_counter()
        await sender.ws.send_str(
            json.dumps(
                {"event": "send", "room_id": room, "message": "x" * 200, "client_id": client_id}
            )
        )
        await sender.wait(lambda c=client_id: c in sender.sent)  # type: ignore[misc]
        message_id = sender.sent[client_id]
        await receiver.wait(lambda m=message_id: m in receiver.arrived)  # type: ignore[misc]
        latencies.append((receiver.arrived[message_id] - start) * 1000)
    before = len(receiver.arrived)
    start = time.perf_counter()
    for i in range(burst):
        await sender.ws.send_str(
            json.dumps(
                {"event": "send", "room_id": room, "message": "y" * 200, "client_id": f"{tag}-t{i}"}
            )
        )
    await receiver.wait(lambda: len(receiver.arrived) >= before + burst)
    await sender.wait(lambda: all(f"{tag}-t{i}" in sender.sent for i in range(burst)))
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "max_ms": round(max(latencies), 3),
        "msgs_per_s": round(burst / elapsed, 1),
    }


_TMPFS = Path("/dev/shm")
WARM = (10, 50)
"""Latency samples and burst of the warm-up before each pair of runs."""


async def _bench(quick: bool, *, on_tmpfs: bool) -> dict[str, Any]:
    samples, burst = (50, 300) if quick else (300, 3000)
    where = str(_TMPFS) if on_tmpfs else None
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-api-", dir=where) as tmp:
        lag = {name: Path(tmp) / f"{name}-loop.json" for name in ("alice", "bob")}
        alice = await _spawn(Path(tmp) / "a", "alice", lag["alice"])
        try:
            bob = await _spawn(Path(tmp) / "b", "bob", lag["bob"])
            try:
                figures = await _between(alice, bob, samples, burst)
            finally:
                await bob.terminate()
        finally:
            await alice.terminate()
        loops = {name: read_lag(where) for name, where in lag.items()}
        # every message the clients sent: warm-up, both pairs of runs (with and without
        # deflate) and the pair of runs with the loop watched
        sent = 2 * (sum(WARM) + 3 * (samples + burst))
        commits = {
            f"{name}_node_commits_per_msg": round(loop.pop("store_transactions", 0) / sent, 3)
            for name, loop in loops.items()
        }
        return {
            **figures,
            **commits,
            "alice_node_loop": loops["alice"],
            "bob_node_loop": loops["bob"],
            "stores": "tmpfs (fsync free)" if on_tmpfs else "disk",
        }


async def _spawn(data_dir: Path, name: str, lag: Path) -> HomeProcess:
    """A home whose event loop's lateness is watched (`tools/bench/loop_lag.py`)."""
    os.environ[LOOP_LAG_ENV] = str(lag)
    try:
        return await spawn_home(data_dir, name=name)
    finally:
        del os.environ[LOOP_LAG_ENV]


@contextlib.contextmanager
def _ticking(*homes: HomeProcess) -> Iterator[None]:
    """The homes' loop-lag tickers run while the block does (`loop_lag.TICK_ON`)."""
    for home in homes:
        os.kill(home.process.pid, TICK_ON)
    try:
        yield
    finally:
        for home in homes:
            os.kill(home.process.pid, TICK_OFF)


async def open_direct_room(
    alice: HomeProcess, bob: HomeProcess, alice_api: ApiClient, bob_api: ApiClient
) -> str:
    """alice's home meets bob's and a direct room opens on both; its id."""
    await alice_api.call("POST", "/v1/peers", {"address": bob.addr})
    opened = await alice_api.call("POST", "/v1/conversation", {"recipient_id": bob.user_text})
    await bob_api.call("POST", "/v1/conversation", {"recipient_id": alice.user_text})
    return str(opened["room_id"])


@contextlib.asynccontextmanager
async def three_clients(
    alice: HomeProcess,
    bob: HomeProcess,
    alice_api: ApiClient,
    bob_api: ApiClient,
    *,
    deflate: bool = False,
) -> AsyncIterator[tuple[BenchClient, BenchClient, BenchClient]]:
    """alice's phone and laptop, and bob's client (who acks what others send), each reading
    its WebSocket while the block runs."""
    async with (
        alice_api.websocket(deflate=deflate) as phone_ws,
        alice_api.websocket(deflate=deflate) as laptop_ws,
        bob_api.websocket(deflate=deflate) as bob_ws,
        asyncio.TaskGroup() as group,
    ):
        phone = BenchClient(phone_ws, alice.user_text, ack=False)
        laptop = BenchClient(laptop_ws, alice.user_text, ack=False)
        bob_client = BenchClient(bob_ws, bob.user_text, ack=True)
        readers = [group.create_task(c.read()) for c in (phone, laptop, bob_client)]
        yield phone, laptop, bob_client
        for reader in readers:
            reader.cancel()


async def _between(
    alice: HomeProcess, bob: HomeProcess, samples: int, burst: int
) -> dict[str, Any]:
    async with (
        ApiClient(alice.api, alice.token) as alice_api,
        ApiClient(bob.api, bob.token) as bob_api,
    ):
        room = await open_direct_room(alice, bob, alice_api, bob_api)
        figures: dict[str, dict[str, float]] = {}
        receipts = 0
        for deflate in (False, True):
            async with three_clients(alice, bob, alice_api, bob_api, deflate=deflate) as (
                phone,
                laptop,
                bob_client,
            ):
                settle = [laptop, bob_client]
                tag = "z" if deflate else ""
                warm_samples, warm_burst = WARM
                await measure(
                    phone,
                    bob_client,
                    room,
                    samples=warm_samples,
                    burst=warm_burst,
                    tag=f"{tag}warm",
                    quiet=[],
                )
                cpu = [process_cpu_s(p.process.pid) for p in (alice, bob)]
                figures[f"{tag}s"] = await measure(
                    phone, laptop, room, samples=samples, burst=burst, tag=f"{tag}s", quiet=settle
                )
                figures[f"{tag}c"] = await measure(
                    phone,
                    bob_client,
                    room,
                    samples=samples,
                    burst=burst,
                    tag=f"{tag}c",
                    quiet=settle,
                )
                if not deflate:  # every message of both runs goes to bob's node too
                    sent = 2 * (samples + burst)
                    nodes = zip((alice, bob), cpu, strict=True)
                    used = [process_cpu_s(p.process.pid) - c for p, c in nodes]
                    figures["cpu"] = {
                        "alice": round(used[0] / sent * 1e6, 1),
                        "bob": round(used[1] / sent * 1e6, 1),
                    }
                    await settled(phone, settle)
                    with _ticking(alice, bob):
                        for name, receiver in (("ls", laptop), ("lc", bob_client)):
                            figures[name] = await measure(
                                phone,
                                receiver,
                                room,
                                samples=samples,
                                burst=burst,
                                tag=name,
                                quiet=settle,
                            )
                    receipts = phone.receipts + laptop.receipts
    same, cross, zsame, zcross = figures["s"], figures["c"], figures["zs"], figures["zc"]
    return {
        "samples": samples,
        "burst": burst,
        "payload_bytes": 200,
        "same_node_p50_ms": same["p50_ms"],
        "same_node_p99_ms": same["p99_ms"],
        "same_node_max_ms": same["max_ms"],
        "same_node_msgs_per_s": same["msgs_per_s"],
        "cross_node_p50_ms": cross["p50_ms"],
        "cross_node_p99_ms": cross["p99_ms"],
        "cross_node_max_ms": cross["max_ms"],
        "cross_node_msgs_per_s": cross["msgs_per_s"],
        "deflate_same_node_p50_ms": zsame["p50_ms"],
        "deflate_same_node_p99_ms": zsame["p99_ms"],
        "deflate_same_node_max_ms": zsame["max_ms"],
        "deflate_same_node_msgs_per_s": zsame["msgs_per_s"],
        "deflate_cross_node_p50_ms": zcross["p50_ms"],
        "deflate_cross_node_p99_ms": zcross["p99_ms"],
        "deflate_cross_node_max_ms": zcross["max_ms"],
        "deflate_cross_node_msgs_per_s": zcross["msgs_per_s"],
        "ticked_same_node_p50_ms": figures["ls"]["p50_ms"],
        "ticked_same_node_p99_ms": figures["ls"]["p99_ms"],
        "ticked_cross_node_p50_ms": figures["lc"]["p50_ms"],
        "ticked_cross_node_p99_ms": figures["lc"]["p99_ms"],
        "alice_node_cpu_us_per_msg": figures["cpu"]["alice"],
        "bob_node_cpu_us_per_msg": figures["cpu"]["bob"],
        "receipt_events_seen_by_alice": receipts,
        "layout": "alice's and bob's nodes each a `hearthmesh run` process; the three clients "
        "in the bench process",
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures of the client API benchmark (see the module docstring)."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(quick, on_tmpfs=False))


def run_nosync(quick: bool) -> dict[str, Any]:
    """The same figures with both stores on tmpfs, where fsync costs nothing (`api-nosync`)."""
    if not _TMPFS.is_dir():
        raise RuntimeError(f"no tmpfs at {_TMPFS}: the no-sync experiment needs one")
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    return asyncio.run(_bench(quick, on_tmpfs=True))
