"""`tools/bench/cost_probe.py`, the probe of `bench send-counts` and `bench delivery-cost`: the
per-message figures count what ran, and a node process's windows open and close on their
signals."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hearthmesh.protocol.canonical import decode_canonical, encode_canonical
from hearthmesh.tools.bench import cost_probe
from hearthmesh.tools.bench.cost_probe import CostWindow, per_message, plain_and_counted


async def _nothing() -> None:
    return None


def _counted_call(n: int) -> int:
    return n + 1


async def test_a_counted_window_counts_the_calls_and_tasks_inside_it_only() -> None:
    data = encode_canonical([1, b"x", "y"])
    ticks = [0]
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    _counted_call(0)  # before the window: not counted
    window = CostWindow(counted=True, counters=lambda: {"ticks": ticks[0]})
    for n in range(6):
        decode_canonical(data, max_bytes=100)
        _counted_call(n)
    await asyncio.gather(*(asyncio.create_task(_nothing()) for _ in range(3)))
    ticks[0] = 9
    totals = window.close()
    _counted_call(0)  # after it: not counted
    assert loop.get_task_factory() is factory  # the loop's own factory is back
    assert [n for label, n in totals["top_calls"].items() if label.endswith(":_counted_call")] == [
        6
    ]
    figures = per_message(totals, 3)
    assert figures["calls_per_msg"]["strict_decodes"] == 2
    assert figures["calls_per_msg"]["cbor_dumps"] == 2  # each strict decode re-encodes once
    assert figures["calls_per_msg"]["cbor_loads"] == 2
    assert figures["calls_per_msg"]["signature_verifies"] == 0
    assert figures["calls_per_msg"]["tasks_created"] == 1
    assert figures["counters_per_msg"] == {"ticks": 3}
    assert figures["cpu_us_per_msg"]["loop"] > 0


def test_a_counted_window_counts_the_trio_threads_calls_on_that_thread() -> None:
    left, right = socket.socketpair()
    with left, right, ThreadPoolExecutor(1) as other:

        def on_other(fn: Callable[[], object]) -> None:
            other.submit(fn)

        window = CostWindow(counted=True, trio=on_other)
        for _ in range(4):
            other.submit(left.send, b"x").result()
        left.send(b"y")  # on this thread: not the trio thread's
        figures = per_message(window.close(), 2)
        plain = per_message(CostWindow(counted=False, trio=on_other).close(), 1)
    assert figures["trio_calls_per_msg"]["socket_sends"] == 2
    assert figures["calls_per_msg"]["strict_decodes"] == 0
    assert "trio_calls_per_msg" not in plain


def test_a_plain_window_counts_no_calls() -> None:
    sum(range(100_000))  # some CPU on this thread
    figures = per_message(CostWindow(counted=False).close(), 1)
    assert "calls_per_msg" not in figures
    assert set(figures["cpu_us_per_msg"]) >= {"loop", "all", "loop_user", "loop_system"}


def test_each_kind_adds_up_its_functions_calls() -> None:
    counts = cost_probe.by_kind(
        {
            "storage/staged.py:put": 6,
            "storage/staged.py:insert": 2,
            "storage/staged.py:delete": 2,
            "storage/staged.py:get": 5,
            "storage/staged.py:get_other": 50,  # another function: no overlay read
            "<method 'get' of 'Transaction' objects>": 4,
        }
    )
    assert counts["staged_writes"] == 10
    assert counts["overlay_reads"] == 5
    assert counts["lmdb_gets"] == 4
    assert counts["cbor_dumps"] == 0


def test_a_homes_figures_take_the_plain_windows_cpu_and_the_counted_windows_calls() -> None:
    counted = {"cpu_s": {"loop": 1.0}, "python_calls": 30, "tasks_created": 1, "top_calls": {}}
    counted["calls"] = cost_probe.by_kind({"storage/staged.py:get": 5})
    figures = plain_and_counted({"cpu_s": {"loop": 0.004}}, counted, 2)
    assert figures["cpu_us_per_msg"]["loop"] == 2000.0
    assert figures["calls_per_msg"]["overlay_reads"] == 2.5
    assert figures["calls_per_msg"]["tasks_created"] == 0.5
    assert figures["python_calls_per_msg"] == 15


async def test_windows_open_and_close_on_their_signals_plain_then_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = tmp_path / "cost.jsonl"
    monkeypatch.setenv(cost_probe.COST_ENV, str(where))
    async with cost_probe.serve_windows(lambda: {"n": 0}):
        for window in range(2):
            os.kill(os.getpid(), cost_probe.WINDOW_START)
            await cost_probe.read_windows(where, 2 * window + 1)
            os.kill(os.getpid(), cost_probe.WINDOW_END)
            await cost_probe.read_windows(where, 2 * window + 2)
    lines = await cost_probe.read_windows(where, 4)
    assert [line.get("opened") for line in lines[::2]] == [1, 2]
    assert "calls" not in lines[1] and "calls" in lines[3]
    assert lines[1]["counters"] == {"n": 0}


async def test_nothing_is_served_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cost_probe.COST_ENV, raising=False)
    loop = asyncio.get_running_loop()
    async with cost_probe.serve_windows(lambda: {}):
        assert not loop.remove_signal_handler(cost_probe.WINDOW_START)  # none was installed
