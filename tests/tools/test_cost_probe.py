"""`tools/bench/cost_probe.py`: the per-message figures of `bench delivery-cost` count what ran,
and a node process's windows open and close on their signals."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hearthmesh.protocol.canonical import decode_canonical, encode_canonical
from hearthmesh.tools.bench import cost_probe
from hearthmesh.tools.bench.cost_probe import CostWindow, per_message


def test_a_counted_window_counts_the_strict_decodes_it_saw() -> None:
    data = encode_canonical([1, b"x", "y"])
    ticks = [0]
    window = CostWindow(counted=True, counters=lambda: {"ticks": ticks[0]})
    for _ in range(6):
        decode_canonical(data, max_bytes=100)
    ticks[0] = 9
    figures = per_message(window.close(), 3)
    assert figures["calls_per_msg"]["strict_decodes"] == 2
    assert figures["calls_per_msg"]["cbor_dumps"] == 2  # each strict decode re-encodes once
    assert figures["calls_per_msg"]["signature_verifies"] == 0
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
    figures = per_message(CostWindow(counted=False).close(), 1)
    assert "calls_per_msg" not in figures
    assert set(figures["cpu_us_per_msg"]) >= {"loop", "all"}


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
