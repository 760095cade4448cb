"""`hearthmesh bench node-cost`: what one node costs in CPU when it does nothing much.

Two parts, nodes in this process as the integration tests run them (real libp2p on
127.0.0.1, LMDB in a temporary directory):

- `cycle_*`: two nodes start, one connects to the other, opens a direct room, sends one
  message and waits for its ack (and its ROOM_KEY's), then both stop: CPU and wall
  milliseconds of each phase, the median over the cycles (CPU is the whole process, both
  nodes and all their threads).
- `idle_*`: N nodes, each connected to the next of a ring, left alone after a settle: the
  CPU per node as a % of one core (the asyncio loop's thread, the libp2p trio threads and the
  store's threads apart), the write batches and LMDB transactions per node per second, and
  what woke the asyncio loop (callbacks per node per second, by name; counted over a second
  window, since counting costs CPU itself).

CPU is each thread's time on a CPU (`/proc/self/task/*/schedstat`, in ns), which a loaded
machine distorts far less than wall time; compare runs side by side (perf notes).
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.node import Node
from hearthmesh.tools.bench.cost_probe import thread_cpu_s

__all__ = ["run"]

_TOP_CALLBACKS: Final = 12


def _config(path: Path) -> NodeConfig:
    return NodeConfig(data_dir=path, listen_addrs=("/ip4/127.0.0.1/tcp/0",))


def _callback_name(callback: Callable[..., Any]) -> str:
    """A task's coroutine (and what it awaits), else the callback's qualified name."""
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        name = getattr(coro, "__qualname__", repr(coro))
        inner = coro
        while (awaited := getattr(inner, "cr_await", None)) is not None and hasattr(
            awaited, "cr_code"
        ):
            inner = awaited
        return f"task {name} > {getattr(inner, '__qualname__', '?')}"
    func = getattr(callback, "func", callback)  # functools.partial
    return str(getattr(func, "__qualname__", type(func).__name__))


@contextmanager
def _counting_callbacks() -> Iterator[collections.Counter[str]]:
    """Count every asyncio callback run while the block runs, by name (a bench's patch of
    `Handle._run`, undone on exit)."""
    counts: collections.Counter[str] = collections.Counter()
    handle = asyncio.events.Handle
    original = handle._run

    def counted(self: asyncio.Handle) -> None:
        counts[_callback_name(self._callback)] += 1  # type: ignore[attr-defined]
        original(self)

    handle._run = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        handle._run = original  # type: ignore[method-assign]


async def _cycle(root: Path, n: int) -> dict[str, tuple[float, float]]:
    """One start, connect, send and stop of two nodes: (CPU ms, wall ms) per phase."""
    marks = [(time.process_time(), time.perf_counter())]

    def mark() -> None:
        marks.append((time.process_time(), time.perf_counter()))

    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Node(_config(root / f"a{n}")))
        b = await stack.enter_async_context(Node(_config(root / f"b{n}")))
        mark()
        await a.connect(b.listen_addrs[0])
        mark()
        room = await a.open_direct(b.user_id)
        await a.send(room, b"x")
        while a.outbox_delivered < 2:  # noqa: ASYNC110 - its ROOM_KEY, then it; no event here
            await asyncio.sleep(0.005)
        mark()
    mark()
    phases = ("start_two", "connect", "send_one", "stop_two")
    return {
        phase: ((c1 - c0) * 1000, (w1 - w0) * 1000)
        for phase, (c0, w0), (c1, w1) in zip(phases, marks[:-1], marks[1:], strict=True)
    }


async def _cycles(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        runs = [await _cycle(Path(tmp), n) for n in range(count + 1)][1:]  # the first warms up
    figures: dict[str, float] = {}
    for phase in runs[0]:
        figures[f"cycle_{phase}_cpu_ms"] = round(statistics.median(r[phase][0] for r in runs), 1)
        figures[f"cycle_{phase}_wall_ms"] = round(statistics.median(r[phase][1] for r in runs), 1)
    return figures


async def _idle(nodes: int, seconds: float, settle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        async with AsyncExitStack() as stack:
            ring = [
                await stack.enter_async_context(Node(_config(Path(tmp) / f"n{i}")))
                for i in range(nodes)
            ]
            for i in range(nodes if nodes > 2 else nodes - 1):  # a ring (a line of two)
                await ring[i].connect(ring[(i + 1) % nodes].listen_addrs[0])
            await asyncio.sleep(settle_s)  # hellos, identify, the first gossip heartbeats
            cpu0, wall0 = thread_cpu_s(), time.perf_counter()
            batches0 = sum(n.store.batches_committed for n in ring)
            commits0 = sum(n.store.transactions for n in ring)
            await asyncio.sleep(seconds)
            cpu1, wall = thread_cpu_s(), time.perf_counter() - wall0
            batches = sum(n.store.batches_committed for n in ring) - batches0
            commits = sum(n.store.transactions for n in ring) - commits0
            with _counting_callbacks() as counts:
                counted_at = time.perf_counter()
                await asyncio.sleep(seconds)
                counted_s = time.perf_counter() - counted_at
    per_node = nodes * wall
    by_thread = {g: round(100 * (cpu1[g] - cpu0.get(g, 0.0)) / per_node, 3) for g in sorted(cpu1)}
    return {
        "cpu_pct_per_node": round(sum(by_thread.values()), 3),
        "cpu_pct_per_node_by_thread": by_thread,
        "write_batches_per_node_per_s": round(batches / per_node, 2),
        "commits_per_node_per_s": round(commits / per_node, 2),
        "loop_callbacks_per_node_per_s": {
            name: round(count / nodes / counted_s, 2)
            for name, count in counts.most_common(_TOP_CALLBACKS)
        },
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures of the start/stop cycle and of idle nodes (quick: fewer and shorter)."""
    cycles, seconds, settle_s, sizes = (1, 1.0, 1.0, (2,)) if quick else (10, 20.0, 3.0, (1, 10))
    figures: dict[str, Any] = {"cycles": cycles, "idle_s": seconds}
    figures.update(asyncio.run(_cycles(cycles)))
    for size in sizes:
        figures[f"idle_{size}_nodes"] = asyncio.run(_idle(size, seconds, settle_s))
    return figures
