"""How late a node process's event loop runs: the benchmarks' figure for what stalls it.

`hearthmesh run` starts `watch_loop` when the environment names a file in `LOOP_LAG_ENV`
(`bench api` does, for both its nodes): a task that asks to wake every millisecond and records
how late each wake-up came. A callback that holds the loop (an fsync on the loop's thread, a
long decode, a collection) shows as lateness. At exit it writes the summary to that file as
JSON, which the benchmark reads after the process stopped, with the node's counters at exit
(`counters`: the store's write transactions, each one fsync) and the collector's passes in any
thread (`gc_passes` per generation, `gc_longest_ms`: `gc_pauses.py`). Off by default: the
ticker costs the node a wake-up per millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final

from hearthmesh.tools.bench.gc_pauses import GcPauses
from hearthmesh.tools.bench.stats import percentile

__all__ = ["LATE_MS", "LOOP_LAG_ENV", "lag_summary", "read_lag", "watch_loop"]

LOOP_LAG_ENV: Final = "HEARTHMESH_LOOP_LAG_FILE"
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
    """Tick while the block runs if `LOOP_LAG_ENV` names a file; write the summary there, with
    what `counters` returns at the block's end."""
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

    collector = GcPauses()
    ticker = asyncio.create_task(tick())
    try:
        with collector.watching():
            yield
    finally:
        ticker.cancel()
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
