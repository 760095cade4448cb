"""`hearthmesh bench delivery`: send-to-stored-ack latency and durable throughput, two processes.

The sender node runs in this process, tuned as a node process is (`tools/process_gc.py`); the
recipient's home node is a child process (`hearthmesh.tools.node_process`). Latency is from
`Node.send` being called (it returns once the message is durable on the sender's node) to the
recipient home node's signed STORED ack arriving back (`DeliveredToHome`), one message at a
time; `deliver_rtt_*` is the part from the batch being written on the stream to the signed ack
being verified (the remote store included); `*_max_ms` is the slowest sample of each.
Throughput keeps many sends in flight and counts acks until the last one arrives.
`HEARTHMESH_TRIO_ON_LOOP=1` runs both nodes' trio as a guest on their event loop, as the
setting does for `hearthmesh run` (`bench api` passes it on to its nodes); `HEARTHMESH_UVLOOP=0`
runs both on asyncio's own loop instead of uvloop's (`tools/event_loop.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import DeliveredToHome
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.tools.bench.stats import percentile, process_rss_mb
from hearthmesh.tools.event_loop import run_node_loop
from hearthmesh.tools.node_process import NodeProcess, free_port, spawn_node
from hearthmesh.tools.process_gc import freeze_startup_objects, tune_collector
from hearthmesh.tools.settings import env_setting

__all__ = ["BODY", "AckWatch", "run", "sending_to"]

BODY = b"x" * 200


async def _measure(quick: bool) -> dict[str, Any]:
    samples, burst = (100, 2_000) if quick else (500, 20_000)
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        recipient = await spawn_node(Path(tmp) / "bob", free_port())
        try:
            async with sending_to(Path(tmp) / "alice", recipient) as (alice, room, acks):
                latencies = []
                warm_trips = len(alice.delivery_round_trips_ms)
                for _ in range(samples):
                    started = time.perf_counter()
                    envelope = await alice.send(room, BODY)
                    await acks.wait_for(envelope.message_id)
                    latencies.append((time.perf_counter() - started) * 1000)
                trips = alice.delivery_round_trips_ms[warm_trips:]
                started = time.perf_counter()
                sent = await asyncio.gather(*(alice.send(room, BODY) for _ in range(burst)))
                sent_s = time.perf_counter() - started
                for envelope in sent:
                    await acks.wait_for(envelope.message_id)
                delivered_s = time.perf_counter() - started
                figures = {
                    "samples": samples,
                    "burst": burst,
                    "body_bytes": len(BODY),
                    "latency_p50_ms": round(percentile(latencies, 50), 3),
                    "latency_p99_ms": round(percentile(latencies, 99), 3),
                    "latency_max_ms": round(max(latencies), 3),
                    "deliver_rtt_p50_ms": round(percentile(trips, 50), 3),
                    "deliver_rtt_p99_ms": round(percentile(trips, 99), 3),
                    "deliver_rtt_max_ms": round(max(trips), 3),
                    "sent_per_s": round(burst / sent_s),
                    "msgs_per_s": round(burst / delivered_s),
                    "rss_mb": process_rss_mb(),
                    "threads": threading.active_count(),
                    "recipient_rss_mb": process_rss_mb(recipient.process.pid),
                }
        finally:
            await recipient.terminate()
    return figures


@contextlib.asynccontextmanager
async def sending_to(
    data_dir: Path, recipient: NodeProcess
) -> AsyncIterator[tuple[Node, RoomId, AckWatch]]:
    """The sender's node in this process, in a direct room with `recipient`'s user, 20
    messages sent and acked (the streams open, the caches filled): the node, the room and
    its acks."""
    config = NodeConfig(
        data_dir=data_dir,
        listen_addrs=("/ip4/127.0.0.1/tcp/0",),
        trio_on_loop=env_setting("trio_on_loop"),
    )
    async with Node(config) as alice:
        freeze_startup_objects()
        await alice.connect(recipient.addr)
        room = await alice.open_direct(UserId(recipient.user_id))
        acks = AckWatch(alice)
        try:
            for _ in range(20):
                await acks.wait_for((await alice.send(room, BODY)).message_id)
            yield alice, room, acks
        finally:
            acks.close()


class AckWatch:
    """Collects DeliveredToHome events so a sender can await one message's ack."""

    def __init__(self, node: Node) -> None:
        self._acked: set[MessageId] = set()
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._follow(node))

    async def _follow(self, node: Node) -> None:
        async for event in node.events():
            if isinstance(event, DeliveredToHome):
                self._acked.add(event.message_id)
                self._changed.set()

    async def wait_for(self, message_id: MessageId) -> None:
        while message_id not in self._acked:
            self._changed.clear()
            await self._changed.wait()
        self._acked.discard(message_id)

    def close(self) -> None:
        self._task.cancel()


def run(quick: bool) -> dict[str, Any]:
    """Figures for `hearthmesh bench delivery`."""
    tune_collector()
    return run_node_loop(_measure(quick), uvloop=env_setting("uvloop"))
