"""The loop-lag watch that `bench api` puts in its nodes (tools/bench/loop_lag.py)."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import pytest

from hearthmesh.tools.bench.loop_lag import LOOP_LAG_ENV, read_lag, watch_loop


async def test_a_callback_that_holds_the_loop_shows_as_a_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(10):
        where = tmp_path / "loop.json"
        monkeypatch.setenv(LOOP_LAG_ENV, str(where))
        async with watch_loop(lambda: {"store_transactions": 7}):
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
