"""`hearthmesh bench fanout`: one sender, a group room of 10 nodes (each its own process).

The sender runs in this process, tuned as a node process is (`tools/process_gc.py`).

`fanout_*`: from `Node.send` to a member's home node taking the message in (whichever path is
first, gossip or the direct stream), over every (message, member) pair, read from each
member process's `--report` lines (one machine, one wall clock). `guaranteed_fanout_*`: from
`Node.send` until every member's home node has acked it (the slowest member decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import DeliveredToHome
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.identity import UserId
from hearthmesh.tools.bench.stats import percentile, process_rss_mb
from hearthmesh.tools.node_process import NodeProcess, free_port, spawn_node
from hearthmesh.tools.process_gc import freeze_startup_objects, tune_collector

__all__ = ["run"]

_BODY = b"x" * 200
_GAP_S = 0.02


async def _follow(
    member: NodeProcess, arrivals: dict[bytes, list[int]], changed: asyncio.Event
) -> None:
    async for message_id, at_ns in member.reports():
        arrivals.setdefault(message_id, []).append(at_ns)
        changed.set()


async def _until(done: Callable[[], bool], changed: asyncio.Event) -> None:
    while not done():
        changed.clear()
        await changed.wait()


async def _measure(quick: bool) -> dict[str, Any]:
    members_count, samples = (4, 20) if quick else (9, 60)
    arrivals: dict[bytes, list[int]] = {}
    ack_counts: dict[MessageId, int] = {}
    all_acked_ns: dict[bytes, int] = {}
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        async with AsyncExitStack() as stack:
            members = await asyncio.gather(
                *(
                    spawn_node(Path(tmp) / f"m{i}", free_port(), report=True)
                    for i in range(members_count)
                )
            )
            for member in members:
                stack.push_async_callback(member.terminate)
            config = NodeConfig(
                data_dir=Path(tmp) / "sender", listen_addrs=("/ip4/127.0.0.1/tcp/0",)
            )
            sender = await stack.enter_async_context(Node(config))
            freeze_startup_objects()
            for member in members:
                await sender.connect(member.addr)
            changed = asyncio.Event()
            readers = [asyncio.create_task(_follow(m, arrivals, changed)) for m in members]
            events = sender.events()

            async def count_acks() -> None:
                async for event in events:
                    if isinstance(event, DeliveredToHome):
                        count = ack_counts.get(event.message_id, 0) + 1
                        ack_counts[event.message_id] = count
                        if count == members_count:
                            all_acked_ns[event.message_id] = time.time_ns()
                            changed.set()

            ack_task = asyncio.create_task(count_acks())
            room = await sender.create_group("bench", [UserId(m.user_id) for m in members])
            warm = await sender.send(room, _BODY)
            await _until(lambda: len(arrivals.get(warm.message_id, [])) == members_count, changed)
            await asyncio.sleep(2.0)  # the room's gossip mesh forms on heartbeats (1 s)
            sent: dict[bytes, int] = {}
            for _ in range(samples):
                started = time.time_ns()
                envelope = await sender.send(room, _BODY)
                sent[envelope.message_id] = started
                await asyncio.sleep(_GAP_S)
            with contextlib.suppress(TimeoutError):  # what did not arrive in 30 s is reported
                async with asyncio.timeout(30):
                    await _until(
                        lambda: all(
                            len(arrivals.get(m, [])) == members_count and m in all_acked_ns
                            for m in sent
                        ),
                        changed,
                    )
            for task in (*readers, ack_task):
                task.cancel()
            first_in = [(at - sent[m]) / 1e6 for m in sent for at in arrivals.get(m, [])]
            all_acked = [(all_acked_ns[m] - sent[m]) / 1e6 for m in sent if m in all_acked_ns]
            return {
                "nodes": members_count + 1,
                "messages": samples,
                "fanout_p50_ms": round(percentile(first_in, 50), 3),
                "fanout_p99_ms": round(percentile(first_in, 99), 3),
                "fanout_received": f"{len(first_in)}/{samples * members_count}",
                "guaranteed_fanout_p50_ms": round(percentile(all_acked, 50), 3)
                if all_acked
                else None,
                "guaranteed_fanout_p99_ms": round(percentile(all_acked, 99), 3)
                if all_acked
                else None,
                "rss_mb": process_rss_mb(),
                "threads": threading.active_count(),
                "member_rss_mb": process_rss_mb(members[0].process.pid),
            }


def run(quick: bool) -> dict[str, Any]:
    """Figures for `hearthmesh bench fanout`."""
    tune_collector()
    return asyncio.run(_measure(quick))
