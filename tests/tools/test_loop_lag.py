"""The loop-lag watch that `bench api` puts in its nodes (tools/bench/loop_lag.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hearthmesh.tools.bench.loop_lag import (
    LOOP_LAG_ENV,
    TICK_OFF,
    TICK_ON,
    read_lag,
    watch_loop,
)


async def _until(done: Callable[[], bool]) -> None:
    """Until `done` (the signal's handler has run); the test's guard ends a hung wait."""
    while not done():  # noqa: ASYNC110 - a signal handler with no event
        await asyncio.sleep(0.001)


async def test_a_callback_that_holds_the_loop_shows_as_a_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(10):
        where = tmp_path / "loop.json"
        monkeypatch.setenv(LOOP_LAG_ENV, str(where))
        tasks = len(asyncio.all_tasks())
        async with watch_loop(lambda: {"store_transactions": 7}):
            os.kill(os.getpid(), TICK_ON)
            await _until(lambda: len(asyncio.all_tasks()) == tasks + 1)
            for _ in range(3):
                await asyncio.sleep(0.01)  # the ticker runs
            time.sleep(0.05)  # noqa: ASYNC251 (holds the loop on purpose, as an inline fsync did)
            gc.collect(1)  # a collection, told apart from the stall
            await asyncio.sleep(0.01)
        summary = read_lag(where)
        assert summary["ticks"] >= 2
        assert summary["stalls_over_2ms"] >= 1
        assert summary["late_max_ms"] >= 40
        assert summary["store_transactions"] == 7  # the node's counters, taken at the end
        assert summary["gc_passes"][1] >= 1
        assert summary["gc_longest_ms"] > 0


async def test_nothing_is_watched_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(10):
        monkeypatch.delenv(LOOP_LAG_ENV, raising=False)
        tasks = len(asyncio.all_tasks())
        async with watch_loop():
            assert len(asyncio.all_tasks()) == tasks
        assert read_lag(tmp_path / "absent.json") == {}


async def test_the_ticker_runs_only_between_tick_on_and_tick_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench api` measures its latencies with the ticker off (a real node has none) and loop
    lag in a phase of its own, between the two signals."""
    async with asyncio.timeout(10):
        where = tmp_path / "loop.json"
        monkeypatch.setenv(LOOP_LAG_ENV, str(where))
        tasks = len(asyncio.all_tasks())
        async with watch_loop():
            await asyncio.sleep(0.01)
            assert len(asyncio.all_tasks()) == tasks  # not asked yet: no ticker
            for _ in range(2):  # on, off, and on again
                os.kill(os.getpid(), TICK_ON)
                await _until(lambda: len(asyncio.all_tasks()) == tasks + 1)
                await asyncio.sleep(0.01)  # its 1 ms wake-up comes first
                os.kill(os.getpid(), TICK_OFF)
                await _until(lambda: len(asyncio.all_tasks()) == tasks)
            os.kill(os.getpid(), TICK_ON)  # left on: the block's end stops it
            await _until(lambda: len(asyncio.all_tasks()) == tasks + 1)
        assert len(asyncio.all_tasks()) == tasks
        assert read_lag(where)["ticks"] >= 2
