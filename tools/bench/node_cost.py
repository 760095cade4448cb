"""`hearthmesh bench node-cost`: what one node costs in CPU when it does nothing much.

Two parts, nodes in this process as the integration tests run them (real libp2p on
127.0.0.1, LMDB in a temporary directory):

- `cycle_*`: two nodes start, one connects to the other, opens a direct room, sends one
  message and waits for its ack (and its ROOM_KEY's), then both stop: CPU and wall
  milliseconds of each phase, the median over the cycles (CPU is the whole process, both
  nodes and all their threads).
- `meeting`: what two started nodes do when one `Node.connect`s to the other, until both have
  been quiet for a settle: the streams each opened, per protocol, the writes on them, the
  connections made (each a Noise handshake) and the process's CPU milliseconds (medians of
  the cycles; the counts of the last).
- `idle_*`: N nodes, each connected to the next of a ring, left alone after a settle: the
  CPU per node as a % of one core (the asyncio loop's thread, the libp2p trio threads and the
  store's threads apart), the write batches and LMDB transactions per node per second, and
  what woke the asyncio loop (callbacks per node per second, by name; counted over a second
  window, since counting costs CPU itself).
- `idle_held_test_timers`: the same of two nodes at the tests' timers, one of which holds a
  message whose sender never answers its key requests, and when it asked after the hold.

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
from hearthmesh.protocol.e2ee import KEY_REQUEST_PROTOCOL
from hearthmesh.tools.bench.cost_probe import thread_cpu_s

__all__ = ["run"]

_TOP_CALLBACKS: Final = 12


TEST_TIMERS: Final[dict[str, Any]] = {
    "retry_poll_ms": 50,
    "key_forward_interval_ms": 250,
    "key_request_interval_ms": 250,
    "dial_retry_delay_ms": 10,
}
"""The timers every test node runs with (tests/integration/conftest.py `FAST` is this dict),
shortened where a test waits on them: the suite's idle nodes cost what
`idle_2_nodes_test_timers` says."""


def _config(path: Path, **timers: Any) -> NodeConfig:
    return NodeConfig(data_dir=path, listen_addrs=("/ip4/127.0.0.1/tcp/0",), **timers)


def _callback_name(callback: Callable[..., Any]) -> str:
    """A task's chain of coroutines down to what it awaits (a supervised service's own `run`
    under `Supervisor._keep`), else the callback's qualified name."""
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        chain = [str(getattr(coro, "__qualname__", repr(coro)))]
        inner = coro
        while (awaited := getattr(inner, "cr_await", None)) is not None and hasattr(
            awaited, "cr_code"
        ):
            inner = awaited
            chain.append(str(getattr(inner, "__qualname__", "?")))
        return "task " + " > ".join(chain)
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


MEETING_SETTLE_S: Final = 3.0
"""How long a meeting is watched after `connect` returned: the hello, identify, the gossip
greeting and the record's DHT put in the background all end well within it."""


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v != before.get(k, 0)}


async def _meeting(root: Path, n: int) -> dict[str, Any]:
    """One meeting of two fresh nodes: per node, streams opened and writes per protocol, the
    connections counted in (a bench's wrap of each host's `_apply_connection`), and CPU."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Node(_config(root / f"ma{n}")))
        b = await stack.enter_async_context(Node(_config(root / f"mb{n}")))
        connections = {"a": 0, "b": 0}
        for name, node in (("a", a), ("b", b)):
            host: Any = node._host
            apply = host._apply_connection

            def counted(
                peer: str, delta: int, ip: str | None, _n: str = name, _f: Any = apply
            ) -> None:
                connections[_n] += delta > 0
                _f(peer, delta, ip)

            host._apply_connection = counted
        await asyncio.sleep(0.5)  # what the start set off
        before = {"a": a.wire(), "b": b.wire()}
        cpu0 = time.process_time()
        await a.connect(b.listen_addrs[0])
        await asyncio.sleep(MEETING_SETTLE_S)
        cpu_ms = (time.process_time() - cpu0) * 1000
        after = {"a": a.wire(), "b": b.wire()}
    figures: dict[str, Any] = {"cpu_ms": round(cpu_ms, 1)}
    for name in ("a", "b"):
        figures[name] = {
            "connections": connections[name],
            "opens": _diff(after[name]["opens"], before[name]["opens"]),
            "writes": _diff(after[name]["writes"], before[name]["writes"]),
        }
    return figures


async def _meetings(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        runs = [await _meeting(Path(tmp), n) for n in range(count + 1)][1:]  # the first warms up
    last = runs[-1]
    return {
        "cpu_ms_median": round(statistics.median(r["cpu_ms"] for r in runs), 1),
        "cpu_ms": [r["cpu_ms"] for r in runs],
        "connector": last["a"],
        "connected": last["b"],
    }


async def _idle(
    nodes: int, seconds: float, settle_s: float, timers: dict[str, Any] | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        async with AsyncExitStack() as stack:
            ring = [
                await stack.enter_async_context(Node(_config(Path(tmp) / f"n{i}", **timers or {})))
                for i in range(nodes)
            ]
            for i in range(nodes if nodes > 2 else nodes - 1):  # a ring (a line of two)
                await ring[i].connect(ring[(i + 1) % nodes].listen_addrs[0])
            return await _left_alone(ring, seconds, settle_s)


async def _idle_held(seconds: float, settle_s: float) -> dict[str, Any]:
    """Two nodes at the tests' timers, one of which holds a message whose key its sender never
    gives: alice writes to carol before she knows carol's record (no share for carol, SPEC
    §27.10.1), and her home ends each of carol's key requests unanswered (a bench's stand-in
    handler), so carol keeps asking at her growing backoff (§27.13.3)."""
    asked: list[float] = []

    async def unanswered(_stream: Any) -> None:
        asked.append(time.perf_counter())  # the stream closes on return: asked in vain

    quiet = {**TEST_TIMERS, "share_presence": False}
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        async with AsyncExitStack() as stack:
            alice, carol = [
                await stack.enter_async_context(Node(_config(Path(tmp) / name, **quiet)))
                for name in ("alice", "carol")
            ]
            alice._host.set_stream_handler(KEY_REQUEST_PROTOCOL, unanswered)
            room = await alice.open_direct(carol.user_id)
            await alice.send(room, b"before I knew your record")
            await carol.connect(alice.listen_addrs[0])
            while carol.store.store.holds < 1:  # noqa: ASYNC110 - a store count has no event
                await asyncio.sleep(0.01)
            held_at = time.perf_counter()
            figures = await _left_alone([alice, carol], seconds, settle_s)
    figures["key_requests_s_after_held"] = [round(t - held_at, 2) for t in asked]
    return figures


async def _left_alone(nodes: list[Node], seconds: float, settle_s: float) -> dict[str, Any]:
    """CPU, write batches and the loop's callbacks of `nodes` left alone after `settle_s`."""
    await asyncio.sleep(settle_s)  # hellos, identify, the first gossip heartbeats
    cpu0, wall0 = thread_cpu_s(), time.perf_counter()
    batches0 = sum(n.store.batches_committed for n in nodes)
    commits0 = sum(n.store.transactions for n in nodes)
    await asyncio.sleep(seconds)
    cpu1, wall = thread_cpu_s(), time.perf_counter() - wall0
    batches = sum(n.store.batches_committed for n in nodes) - batches0
    commits = sum(n.store.transactions for n in nodes) - commits0
    with _counting_callbacks() as counts:
        counted_at = time.perf_counter()
        await asyncio.sleep(seconds)
        counted_s = time.perf_counter() - counted_at
    per_node = len(nodes) * wall
    by_thread = {g: round(100 * (cpu1[g] - cpu0.get(g, 0.0)) / per_node, 3) for g in sorted(cpu1)}
    return {
        "cpu_pct_per_node": round(sum(by_thread.values()), 3),
        "cpu_pct_per_node_by_thread": by_thread,
        "write_batches_per_node_per_s": round(batches / per_node, 2),
        "commits_per_node_per_s": round(commits / per_node, 2),
        "loop_callbacks_per_node_per_s": {
            name: round(count / len(nodes) / counted_s, 2)
            for name, count in counts.most_common(_TOP_CALLBACKS)
        },
    }


def run(quick: bool) -> dict[str, Any]:
    """Figures of the start/stop cycle and of idle nodes (quick: fewer and shorter)."""
    cycles, seconds, settle_s, sizes = (1, 1.0, 1.0, (2,)) if quick else (10, 20.0, 3.0, (1, 10))
    figures: dict[str, Any] = {"cycles": cycles, "idle_s": seconds}
    figures.update(asyncio.run(_cycles(cycles)))
    figures["meeting"] = asyncio.run(_meetings(min(cycles, 5)))
    for size in sizes:
        figures[f"idle_{size}_nodes"] = asyncio.run(_idle(size, seconds, settle_s))
    figures["idle_2_nodes_test_timers"] = asyncio.run(_idle(2, seconds, settle_s, TEST_TIMERS))
    figures["idle_held_test_timers"] = asyncio.run(_idle_held(seconds, settle_s))
    return figures
