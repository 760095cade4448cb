"""`hearthmesh bench delivery-cost`: what one message delivered across nodes costs each home, in
figures a loaded machine does not move (issue #13).

`bench delivery`'s layout: the sender's node in this process, the recipient's home node a
child process (`tools/node_process.py`), one message at a time, each awaited until the
recipient's signed STORED ack is back. Two windows of N messages each, measured on both homes
(`tools/bench/cost_probe.py`, the probe `bench send-counts` reads too): in the first, each
thread group's CPU per message (`cpu_us_per_msg`: the loop, the trio thread, the store's
threads, the rest, and the loop thread's user and system time; the sender's figure includes this
bench's own loop work, a send and an await per message); in the second, cProfile on each loop's
thread counts its calls per message by kind (`calls_per_msg`, the probe's `CATEGORIES`: decodes,
encodes, verifies, LMDB and overlay operations, commits, hand-offs between threads, tasks;
`top_calls_per_msg`, the most called functions; `python_calls_per_msg`, all of them), the same
for each trio thread (`trio_calls_per_msg`, the probe's `TRIO_CATEGORIES`: locks taken,
scheduler passes, socket sends and receives, wake-ups of the loop, debug log calls;
`trio_python_calls_per_msg`), and each store's write batches and transactions per message
(`counters_per_msg`). Those counts are the
same at any load; the CPU moves some with it, far less than the latencies.
"""

from __future__ import annotations

import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.tools.bench.cost_probe import (
    COST_ENV,
    WINDOW_END,
    WINDOW_START,
    CostWindow,
    plain_and_counted,
    read_windows,
    store_counters,
    trio_thread_of,
)
from hearthmesh.tools.bench.delivery import BODY, AckWatch, sending_to
from hearthmesh.tools.event_loop import run_node_loop
from hearthmesh.tools.node_process import NodeProcess, free_port, spawn_node
from hearthmesh.tools.process_gc import tune_collector
from hearthmesh.tools.settings import env_setting

__all__ = ["run"]

_TMPFS = Path("/dev/shm")


async def _window(
    alice: Node, room: RoomId, acks: AckWatch, bob: NodeProcess, cost_file: Path, *, n: int, k: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The k-th window (from 0) of n messages: (alice's figures, bob's)."""
    os.kill(bob.process.pid, WINDOW_START)
    await read_windows(cost_file, 2 * k + 1)  # bob's window is open
    window = CostWindow(
        counted=k % 2 == 1, counters=partial(store_counters, alice), trio=trio_thread_of(alice)
    )
    for _ in range(n):
        await acks.wait_for((await alice.send(room, BODY)).message_id)
    mine = window.close()
    os.kill(bob.process.pid, WINDOW_END)
    return mine, (await read_windows(cost_file, 2 * k + 2))[-1]


async def _measure(quick: bool, *, on_tmpfs: bool) -> dict[str, Any]:
    n = 100 if quick else 400
    where = str(_TMPFS) if on_tmpfs else None
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-", dir=where) as tmp:
        cost_file = Path(tmp) / "cost.jsonl"
        os.environ[COST_ENV] = str(cost_file)  # for the child alone
        try:
            bob = await spawn_node(Path(tmp) / "bob", free_port())
        finally:
            del os.environ[COST_ENV]
        try:
            async with sending_to(Path(tmp) / "alice", bob) as (alice, room, acks):
                plain = await _window(alice, room, acks, bob, cost_file, n=n, k=0)
                counted = await _window(alice, room, acks, bob, cost_file, n=n, k=1)
        finally:
            await bob.terminate()
    homes = {
        home: plain_and_counted(plain[side], counted[side], n)
        for side, home in enumerate(("sender", "recipient"))
    }
    stores = "tmpfs (fsync free)" if on_tmpfs else "disk"
    return {"messages_per_window": n, "body_bytes": len(BODY), "stores": stores, **homes}


def run(quick: bool) -> dict[str, Any]:
    """Figures for `hearthmesh bench delivery-cost`: both stores on tmpfs where there is one.

    On the disk a durable commit's two flushes cost kernel CPU too (ext4 on this machine's
    virtual disk: most of a message's CPU, in the thread that commits), which would hide the
    path's own; `delivery-cost-disk` keeps them.
    """
    tune_collector()
    on_tmpfs = _TMPFS.is_dir()
    return run_node_loop(_measure(quick, on_tmpfs=on_tmpfs), uvloop=env_setting("uvloop"))


def run_disk(quick: bool) -> dict[str, Any]:
    """The same with both stores on the disk, as a home runs (`delivery-cost-disk`)."""
    tune_collector()
    return run_node_loop(_measure(quick, on_tmpfs=False), uvloop=env_setting("uvloop"))
