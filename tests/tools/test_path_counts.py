"""The per-message counter `bench send-counts` puts in alice's node (tools/bench/path_counts.py,
tools/bench/send_counts.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from hearthmesh.tools.bench.path_counts import (
    COUNT_CALLS,
    COUNT_CPU,
    COUNT_STOP,
    PATH_COUNTS_ENV,
    count_path,
)
from hearthmesh.tools.bench.send_counts import kind_counts


async def _until(done: Callable[[], bool]) -> None:
    """Until `done` (the signal's handler has run); the test's guard ends a hung wait."""
    while not done():  # noqa: ASYNC110 - a signal handler with no event
        await asyncio.sleep(0.001)


def _counted_call(n: int) -> int:
    return n + 1


async def _nothing() -> None:
    return None


async def _signal(signum: int, moved: Callable[[], bool]) -> None:
    os.kill(os.getpid(), signum)
    await _until(moved)


async def test_a_profiled_window_counts_the_calls_and_tasks_inside_it_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(10):
        where = tmp_path / "counts.json"
        monkeypatch.setenv(PATH_COUNTS_ENV, str(where))
        loop = asyncio.get_running_loop()
        async with count_path():
            _counted_call(0)  # before any window: not counted
            await _signal(COUNT_CALLS, lambda: loop.get_task_factory() is not None)
            for n in range(7):
                _counted_call(n)
            await asyncio.gather(*(asyncio.create_task(_nothing()) for _ in range(3)))
            await _signal(COUNT_STOP, lambda: loop.get_task_factory() is None)
            _counted_call(0)  # after it: not counted
            await _signal(COUNT_CPU, lambda: loop.get_task_factory() is not None)
            sum(range(100_000))  # some CPU on this thread
            await _signal(COUNT_STOP, lambda: loop.get_task_factory() is None)
        calls_window, cpu_window = json.loads(where.read_text())
        counted = [
            n for n in calls_window["calls"] if n.endswith("test_path_counts.py:_counted_call")
        ]
        assert [calls_window["calls"][n] for n in counted] == [7]
        assert calls_window["tasks_created"] == 3
        assert "calls" not in cpu_window
        assert cpu_window["loop_user_ns"] + cpu_window["loop_system_ns"] > 0
        assert kind_counts(calls_window["calls"], 7)["cbor_encodes"] == 0


async def test_nothing_is_counted_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(10):
        monkeypatch.delenv(PATH_COUNTS_ENV, raising=False)
        loop = asyncio.get_running_loop()
        async with count_path():
            assert not loop.remove_signal_handler(COUNT_CALLS)  # none was installed


def test_kind_counts_add_up_each_kinds_functions_per_message() -> None:
    calls = {
        "storage/staged.py:put": 6,
        "storage/staged.py:insert": 2,
        "storage/staged.py:delete": 2,
        "storage/staged.py:get": 5,
        "protocol/canonical.py:encode_canonical": 3,
    }
    counts = kind_counts(calls, 2)
    assert counts["staged_writes"] == 5.0
    assert counts["overlay_reads"] == 2.5
    assert counts["cbor_encodes"] == 1.5
    assert counts["lmdb_gets"] == 0.0
