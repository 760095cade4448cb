"""How late a node process's event loop runs: the benchmarks' figure for what stalls it.

`hearthmesh run` starts `watch_loop` when the environment names a file in `LOOP_LAG_ENV`
(`bench api` does, for both its nodes). Between a `TICK_ON` signal and a `TICK_OFF` one it runs
a task that asks to wake every millisecond and records how late each wake-up came. A callback
that holds the loop (an fsync on the loop's thread, a long decode, a collection) shows as
lateness. At exit it writes the summary to that file as JSON, which the benchmark reads after
the process stopped, with the node's counters at exit (`counters`: the store's write
transactions, each one fsync) and the collector's passes in any thread over the whole run
(`gc_passes` per generation, `gc_longest_ms`: `gc_pauses.py`). The ticker runs only when asked
because it is no part of a real node: a ready wake-up each millisecond made the store's lone
commits wait a turn or go to the writer thread (ARCHITECTURE §10), so `bench api` measures its
latencies with it off and loop lag in a phase of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

from hearthmesh.tools.bench.gc_pauses import GcPauses
from hearthmesh.tools.bench.stats import percentile

__all__ = [
    "LATE_MS",
    "LOOP_LAG_ENV",
    "TICK_OFF",
    "TICK_ON",
    "lag_summary",
    "read_lag",
    "watch_loop",
]

LOOP_LAG_ENV: Final = "HEARTHMESH_LOOP_LAG_FILE"
TICK_ON: Final = signal.SIGUSR1
"""Start the ticker (a watched node that gets it ticks until `TICK_OFF`)."""
TICK_OFF: Final = signal.SIGUSR2
TICK_S: Final = 0.001
LATE_MS: Final = 2.0
"""A wake-up later than this counts as a stall."""


def lag_summary(late_ms: list[float]) -> dict[str, Any]:
    """Ticks, stalls (ticks over `LATE_MS` late), the lateness's p50, p99 and max in ms."""
    if not late_ms:
        return {"ticks": 0}
    return {
        "ticks": len(late_ms),
        "stalls_over_2ms": sum(1 for late in late_ms if late > LATE_MS),
        "late_p50_ms": round(percentile(late_ms, 50), 3),
        "late_p99_ms": round(percentile(late_ms, 99), 3),
        "late_max_ms": round(max(late_ms), 3),
    }


@contextlib.asynccontextmanager
async def watch_loop(counters: Callable[[], dict[str, int]] | None = None) -> AsyncIterator[None]:
    """While the block runs, if `LOOP_LAG_ENV` names a file: tick between `TICK_ON` and
    `TICK_OFF`; at the end write the summary there, with what `counters` returns then."""
    where = os.environ.get(LOOP_LAG_ENV)
    if not where:
        yield
        return
    late_ms: list[float] = []

    async def tick() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            late_ms.append((time.perf_counter() - started - TICK_S) * 1000)

    loop = asyncio.get_running_loop()
    collector = GcPauses()
    running: list[asyncio.Task[None]] = []  # the ticker now, if one runs
    stopped: list[asyncio.Task[None]] = []  # awaited at the end: none outlives the block

    def start() -> None:
        if not running:
            running.append(asyncio.create_task(tick()))

    def stop() -> None:
        if running:
            ticker = running.pop()
            ticker.cancel()
            stopped.append(ticker)

    loop.add_signal_handler(TICK_ON, start)
    loop.add_signal_handler(TICK_OFF, stop)
    try:
        with collector.watching():
            yield
    finally:
        loop.remove_signal_handler(TICK_ON)
        loop.remove_signal_handler(TICK_OFF)
        stop()
        for ticker in stopped:
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        summary = lag_summary(late_ms) | collector.summary()
        if counters is not None:
            summary.update(counters())
        await asyncio.to_thread(Path(where).write_text, json.dumps(summary))


def read_lag(path: Path) -> dict[str, Any]:
    """The summary a stopped node wrote (empty if it wrote none)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}
